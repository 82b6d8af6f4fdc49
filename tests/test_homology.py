"""TAPE remote homology from tiny JSON and LMDB files written here in TAPE's layout."""

import json
import pickle

import numpy as np
import pytest

import fpt
from fpt.tasks.homology import AMINO_ACIDS, TOKEN_IDS

SPLITS = {"train": 12, "valid": 4, "test_fold_holdout": 5, "test_superfamily_holdout": 3, "test_family_holdout": 2}


def records(name: str, n: int) -> list[dict]:
    rng = np.random.default_rng(len(name))
    return [
        {
            "id": f"{name}-{i}",
            "primary": "".join(rng.choice(list(AMINO_ACIDS), size=int(rng.integers(5, 30)))),
            "protein_length": 0,
            "fold_label": int(rng.integers(0, 1195)) if i else 1194,
            "evolutionary": rng.random((3, 2)).astype(np.float32),  # TAPE's LMDB values hold arrays too
        }
        for i in range(n)
    ]


def write_json(folder, data: dict[str, list[dict]]) -> None:
    for name, recs in data.items():
        plain = [{k: v for k, v in r.items() if k != "evolutionary"} for r in recs]
        (folder / f"remote_homology_{name}.json").write_text(json.dumps(plain))


def write_lmdb(folder, data: dict[str, list[dict]], count: dict[str, int] | None = None) -> None:
    lmdb = pytest.importorskip("lmdb")
    for name, recs in data.items():
        env = lmdb.open(str(folder / f"remote_homology_{name}.lmdb"), map_size=1 << 22)
        with env.begin(write=True) as txn:
            txn.put(b"num_examples", pickle.dumps((count or {}).get(name, len(recs))))
            for i, r in enumerate(recs):
                txn.put(str(i).encode(), pickle.dumps(r))
        env.close()


@pytest.fixture
def data():
    return {name: records(name, n) for name, n in SPLITS.items()}


def decode(x) -> str:
    return "".join(AMINO_ACIDS[i - 1] for i in x.tolist())


@pytest.mark.parametrize("fmt", ["json", "lmdb"])
def test_homology_reads_tape_files(tmp_path, data, fmt):
    (write_json if fmt == "json" else write_lmdb)(tmp_path, data)
    task = fpt.get_task("homology", data_dir=str(tmp_path))
    spec = task.spec
    assert (spec.input, spec.input_dim, spec.num_classes) == ("tokens", 26, 1195)
    assert task.info["split_sizes"] == {"train": 12, "val": 4, "test": 5}
    assert task.info["files"]["test"] == f"remote_homology_test_fold_holdout.{fmt}"
    x, y = task.splits["test"][0]
    assert decode(x) == data["test_fold_holdout"][0]["primary"] and int(y) == 1194
    used = ("train", "valid", "test_fold_holdout")
    assert spec.max_tokens == max(len(r["primary"]) for name in used for r in data[name])
    assert set(TOKEN_IDS.values()) == set(range(1, 26))


def test_holdout_subsets_and_max_len_crop(tmp_path, data, capsys):
    write_json(tmp_path, data)
    task = fpt.get_task("homology", data_dir=str(tmp_path), holdout="family", max_len=8, long="crop", train_size=6)
    assert task.info["split_sizes"] == {"train": 6, "val": 4, "test": 2}
    assert task.info["published_sizes"]["train"] == 12 and task.spec.max_tokens == 8
    assert decode(task.splits["test"][1][0]) == data["test_family_holdout"][1]["primary"][:8]
    cropped = sum(len(r["primary"]) > 8 for r in data["valid"])
    assert cropped and task.info["cropped_to_max_len"]["val"] == cropped
    cropped_total = sum(task.info["cropped_to_max_len"].values())
    assert f"cropped {cropped_total} sequences to max_len=8 residues" in capsys.readouterr().err
    with pytest.raises(fpt.FPTError, match="holdout must be one of fold, superfamily, family"):
        fpt.get_task("homology", data_dir=str(tmp_path), holdout="class")
    with pytest.raises(fpt.FPTError, match="long must be drop or crop, got 'cut'"):
        fpt.get_task("homology", data_dir=str(tmp_path), max_len=8, long="cut")


def test_max_len_drops_longer_sequences_by_default_and_says_so(tmp_path, data, capsys):
    write_json(tmp_path, data)
    max_len = sorted(len(r["primary"]) for r in data["valid"])[1]  # keeps at least two of each split's shortest
    task = fpt.get_task("homology", data_dir=str(tmp_path), max_len=max_len)
    kept = {s: [x for x, _ in task.splits[s]] for s in ("train", "val", "test")}
    assert all(len(x[x > 0]) <= max_len for xs in kept.values() for x in xs)
    dropped = sum(len(r["primary"]) > max_len for r in data["valid"])
    assert task.info["dropped_over_max_len"]["val"] == dropped
    assert task.info["split_sizes"]["val"] == len(data["valid"]) - dropped
    assert f"examples longer than max_len={max_len} residues" in capsys.readouterr().err
    with pytest.raises(fpt.FPTError, match="max_len=1 leaves no train examples"):
        fpt.get_task("homology", data_dir=str(tmp_path), max_len=1)


def test_json_is_preferred_and_a_missing_split_is_named(tmp_path, data):
    write_json(tmp_path, data)
    (tmp_path / "remote_homology_valid.json").unlink()
    with pytest.raises(fpt.FPTError, match="no remote_homology_valid.json or .lmdb"):
        fpt.get_task("homology", data_dir=str(tmp_path))
    with pytest.raises(fpt.FPTError, match="task 'homology' reads your copy of the data"):
        fpt.get_task("homology")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated", "remote_homology_train.json: not valid JSON"),
        ("letter", "remote_homology_train.json: record 2: 'J' is not an IUPAC letter"),
        ("label", "remote_homology_train.json: record 2: 'fold_label' must be an integer 0-1194, got 1195"),
        ("no primary", "remote_homology_train.json: record 2 has no amino-acid string 'primary'"),
    ],
)
def test_corrupt_json_gives_one_line_naming_the_file(tmp_path, data, damage, message):
    if damage == "letter":
        data["train"][2]["primary"] = "ACJ"
    elif damage == "label":
        data["train"][2]["fold_label"] = 1195
    elif damage == "no primary":
        del data["train"][2]["primary"]
    write_json(tmp_path, data)
    if damage == "truncated":
        path = tmp_path / "remote_homology_train.json"
        path.write_text(path.read_text()[:-40])
    with pytest.raises(fpt.FPTError, match=message) as err:
        fpt.get_task("homology", data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.parametrize("damage", ["missing record", "corrupt file", "code in a value"])
def test_corrupt_lmdb_gives_one_line_naming_the_file(tmp_path, data, damage):
    write_lmdb(tmp_path, data, count={"valid": 6} if damage == "missing record" else None)
    path = tmp_path / "remote_homology_valid.lmdb"
    if damage == "corrupt file":
        (path / "data.mdb").write_bytes(b"\x00garbage" * 100)
        message = "remote_homology_valid.lmdb: not a readable LMDB database"
    elif damage == "code in a value":
        import lmdb

        env = lmdb.open(str(path))
        with env.begin(write=True) as txn:
            txn.put(b"1", b"cos\nsystem\n(S'echo hacked'\ntR.")
        env.close()
        message = r"remote_homology_valid.lmdb \(record 1\): not a readable pickle .*refusing to load os.system"
    else:
        message = "remote_homology_valid.lmdb: truncated: num_examples is 6 but record b'4' is missing"
    with pytest.raises(fpt.FPTError, match=message) as err:
        fpt.get_task("homology", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)


def test_lmdb_without_the_package_says_how_to_get_it(tmp_path, data, monkeypatch):
    write_lmdb(tmp_path, data)
    import builtins

    real_import = builtins.__import__

    def no_lmdb(name, *args, **kwargs):
        if name == "lmdb":
            raise ImportError("no lmdb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lmdb)
    with pytest.raises(fpt.FPTError, match=r"remote_homology_train.lmdb: reading TAPE's .lmdb files needs the lmdb"):
        fpt.get_task("homology", data_dir=str(tmp_path))
