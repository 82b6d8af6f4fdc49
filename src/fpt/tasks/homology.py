"""`homology`: TAPE remote homology, a protein's fold (1195 classes) from its amino-acid sequence.

Read from your copy of TAPE's files in `data_dir` (or its `remote_homology/` subfolder), JSON or LMDB, named as TAPE
names them: remote_homology_{train, valid, test_fold_holdout, test_superfamily_holdout, test_family_holdout}.{json,
lmdb}. JSON is preferred where both exist and needs nothing; LMDB needs the `lmdb` package (pip install lmdb). A
record has `primary` (the amino-acid string) and `fold_label` (0-1194); other fields are ignored.
TAPE's splits are used as published: train 12,312, valid 736, and the test holdout `holdout` names: fold 718 (the
paper's, default), superfamily 1,254, family 1,272. `train_size` / `test_size` take seeded subsets for short runs.

Tokens: 0 = padding, then TAPE's 25 IUPAC letters (A-Z without J), one residue a token (vocab 26). Nothing is cut
silently: with `max_len`, longer sequences are dropped (`long: drop`, the default) or cropped to their first `max_len`
residues (`long: crop`, which keeps every test example); either way the count per split is printed and recorded in
`info`.
TAPE's LMDB values are pickled dicts: they are read only from the folder you give, and through
fpt.tasks.files.safe_unpickle, which loads dicts, lists and numpy arrays and refuses anything else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import Task, TaskSpec, check_positive, drop_longer
from fpt.tasks.files import data_folder, safe_unpickle, seeded_subset
from fpt.tasks.listops import TokenSplit

AMINO_ACIDS = "ABCDEFGHIKLMNOPQRSTUVWXYZ"  # TAPE's IUPAC vocabulary: 25 letters
TOKEN_IDS = {a: i for i, a in enumerate(AMINO_ACIDS, 1)}
NUM_FOLDS = 1195
HOLDOUTS = ("fold", "superfamily", "family")
EXPECTED = "remote_homology_{train,valid,test_fold_holdout}.json (or .lmdb)"


def find_split_file(folder: Path, name: str) -> Path:
    """remote_homology_<name>.json, else .lmdb, in `folder` or its remote_homology/ subfolder."""
    for where in (folder, folder / "remote_homology"):
        for ext in (".json", ".lmdb"):
            path = where / f"remote_homology_{name}{ext}"
            if path.exists():
                return path
    raise FPTError(f"{folder}: no remote_homology_{name}.json or .lmdb; data_dir must hold {EXPECTED}")


def read_json_records(path: Path) -> list[Any]:
    """TAPE's JSON: one list of record objects."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FPTError(f"{path}: not valid JSON (truncated or corrupt?): {e.msg} at line {e.lineno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FPTError(f"{path}: cannot read: {e}") from None
    if not isinstance(records, list):
        raise FPTError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def read_lmdb_records(path: Path) -> list[Any]:
    """TAPE's LMDB: keys b'0', b'1', ... and b'num_examples', each value a pickled object."""
    try:
        import lmdb
    except ImportError:
        raise FPTError(
            f"{path}: reading TAPE's .lmdb files needs the lmdb package (pip install lmdb); or give the .json files"
        ) from None
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=path.is_dir(), max_readers=1)
        with env, env.begin() as txn:
            raw = txn.get(b"num_examples")
            if raw is None:
                raise FPTError(f"{path}: no b'num_examples' key; not a TAPE LMDB file")
            count = safe_unpickle(raw, f"{path} (b'num_examples')")
            if not isinstance(count, int) or count < 0:
                raise FPTError(f"{path}: b'num_examples' is {count!r}, not a count")
            records = []
            for i in range(count):
                value = txn.get(str(i).encode())
                if value is None:
                    raise FPTError(f"{path}: truncated: num_examples is {count} but record b'{i}' is missing")
                records.append(safe_unpickle(value, f"{path} (record {i})"))
    except lmdb.Error as e:
        raise FPTError(f"{path}: not a readable LMDB database (truncated or corrupt?): {e}") from None
    return records


def read_split(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids (uint8) and fold labels of one split file; a bad record is an FPTError naming file and record."""
    records = read_json_records(path) if path.suffix == ".json" else read_lmdb_records(path)
    if not records:
        raise FPTError(f"{path}: no records")
    inputs, labels = [], []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise FPTError(f"{path}: record {i} is {type(record).__name__}, not a dict")
        record = {k.decode() if isinstance(k, bytes) else k: v for k, v in record.items()}
        primary, label = record.get("primary"), record.get("fold_label")
        if isinstance(primary, bytes):
            primary = primary.decode("ascii", errors="replace")
        if not isinstance(primary, str) or not primary:
            raise FPTError(f"{path}: record {i} has no amino-acid string 'primary'")
        try:
            ids = [TOKEN_IDS[a] for a in primary.upper()]
        except KeyError as e:
            raise FPTError(f"{path}: record {i}: {e.args[0]!r} is not an IUPAC letter ({AMINO_ACIDS})") from None
        if isinstance(label, np.ndarray) and label.size == 1:
            label = label.item()
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 0 <= label < NUM_FOLDS:
            raise FPTError(f"{path}: record {i}: 'fold_label' must be an integer 0-{NUM_FOLDS - 1}, got {label!r}")
        inputs.append(np.array(ids, dtype=np.uint8))
        labels.append(int(label))
    return inputs, np.array(labels, dtype=np.int64)


@TASKS.register(
    "homology",
    "protein: TAPE remote homology (data_dir, JSON or LMDB), one residue a token (vocab 26), 1195 folds; "
    "12,312/736/718",
)
def homology(
    data_dir: str | None = None,
    holdout: str = "fold",
    max_len: int | None = None,
    long: str = "drop",
    train_size: int | None = None,
    test_size: int | None = None,
    split_seed: int = 0,
) -> Task:
    """TAPE's train / valid / test_<holdout>_holdout files from `data_dir`."""
    folder = data_folder(data_dir, "homology", EXPECTED)
    if holdout not in HOLDOUTS:
        raise FPTError(f"task argument holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    if long not in ("drop", "crop"):
        raise FPTError(f"task argument long must be drop or crop, got {long!r}")
    sizes = {"max_len": max_len, "train_size": train_size, "test_size": test_size}
    check_positive(**{k: v for k, v in sizes.items() if v is not None})
    files = {"train": "train", "val": "valid", "test": f"test_{holdout}_holdout"}
    paths = {split: find_split_file(folder, name) for split, name in files.items()}
    data = {split: read_split(path) for split, path in paths.items()}
    published = {split: len(labels) for split, (_, labels) in data.items()}

    for split, size in (("train", train_size), ("test", test_size)):
        xs, ys = data[split]
        if size is not None and size != len(ys):
            if size > len(ys):
                raise FPTError(f"task argument {split}_size={size} exceeds the {len(ys)} {split} examples")
            keep = seeded_subset(ys, size, split_seed, stratify=False)[1]
            data[split] = ([xs[i] for i in keep], ys[keep])
    over = {s: sum(len(x) > max_len for x in xs) if max_len else 0 for s, (xs, _) in data.items()}
    if max_len is not None and long == "drop":
        kept = drop_longer(data, max_len, "homology", "residues")[0]
        data = {s: (xs, np.asarray(ys)) for s, (xs, ys) in kept.items()}
    elif max_len is not None:
        data = {s: ([x[:max_len] for x in xs], ys) for s, (xs, ys) in data.items()}
        if sum(over.values()):
            print(
                f"fpt: homology: cropped {sum(over.values())} sequences to max_len={max_len} residues "
                f"({', '.join(f'{s} {n}' for s, n in over.items())})",
                file=sys.stderr,
            )

    lengths = {s: [len(x) for x in xs] for s, (xs, _) in data.items()}
    spec = TaskSpec(
        "homology",
        "protein",
        "tokens",
        input_dim=len(AMINO_ACIDS) + 1,
        num_classes=NUM_FOLDS,
        max_tokens=max(max(n) for n in lengths.values()),
        default_steps=5000,
        default_eval_every=500,
    )
    info = {
        "source": str(folder.resolve()),
        "files": {s: p.name for s, p in paths.items()},
        "holdout": holdout,
        "published_sizes": published,
        "train_subset": train_size,
        "test_subset": test_size,
        "split_seed": split_seed,
        "max_len": max_len,
        "long": long,
        ("cropped_to_max_len" if long == "crop" else "dropped_over_max_len"): over,
        "lengths": {s: {"min": min(n), "mean": round(float(np.mean(n)), 1), "max": max(n)} for s, n in lengths.items()},
        "folds_in_train": int(len(np.unique(data["train"][1]))),
    }
    return Task(spec, {s: TokenSplit(xs, ys) for s, (xs, ys) in data.items()}, info)
