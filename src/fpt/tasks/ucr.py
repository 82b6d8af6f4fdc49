"""`ucr:<Name>`: a UCR/UEA time-series classification set from the .ts files that aeon ships inside its package.

Only files already on disk are read (aeon's local `load_from_ts_file`); nothing is downloaded. Validation is a
seeded stratified part of the shipped TRAIN file, test is the shipped TEST file. A token is one time step (input_dim =
channels) or, with `patch=p`, p consecutive steps (input_dim = p × channels, the tail padded with zeros). Values are
standardised per channel with the mean and std of the training split only. Unequal-length sets (JapaneseVowels,
PickupGestureWiimoteZ) stay variable-length: batches are padded by `collate`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import Task, TaskSpec, TensorSplit, check_positive, stratified_split

MAX_TOKENS = 64  # default bound on sequence length: sets the default patch (see ucr())


def aeon_data_dir() -> Path:
    """aeon's bundled data folder, found without importing aeon."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or spec.origin is None:
        raise FPTError("ucr tasks read the data sets shipped with aeon; install it: pip install aeon")
    return Path(spec.origin).parent / "datasets" / "data"


def _is_classification(path: Path) -> bool:
    """Whether a .ts header declares class labels (`@classLabel true ...`) rather than a regression target."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            words = line.lower().split()
            if words[:1] == ["@data"]:
                return False
            if words[:2] == ["@classlabel", "true"]:
                return True
    return False


def shipped_datasets() -> dict[str, tuple[Path, Path]]:
    """Name → (TRAIN, TEST) .ts files of every classification set shipped with aeon, sorted by name."""
    found = {}
    for train in sorted(aeon_data_dir().glob("*/*_TRAIN.ts")):
        test = train.with_name(train.name.replace("_TRAIN.ts", "_TEST.ts"))
        if test.exists() and _is_classification(train):
            found[train.name.removesuffix("_TRAIN.ts")] = (train, test)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _natural_order(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def _series(data) -> list[np.ndarray]:
    """aeon's (N, C, T) array or list of (C, T_i) arrays → list of (T_i, C) float64 arrays."""
    return [np.asarray(x, dtype=np.float64).T for x in data]


def _tokens(x: np.ndarray, patch: int) -> np.ndarray:
    """(T, C) → (ceil(T / p), p · C): p consecutive steps a token, time-major within the patch, tail zero-padded."""
    steps, channels = x.shape
    padded = np.zeros((-(-steps // patch) * patch, channels), dtype=np.float32)
    padded[:steps] = x
    return padded.reshape(-1, patch * channels)


@TASKS.register(
    "ucr", "time series: a UCR/UEA classification set shipped with aeon, one time step (or patch) a token", prefix=True
)
def ucr(
    name: str, patch: int | None = None, max_tokens: int = MAX_TOKENS, val_fraction: float = 0.2, split_seed: int = 0
) -> Task:
    """`ucr:GunPoint`, `ucr:BasicMotions`, ...: the shipped TRAIN file split into train/val, the TEST file as test.

    `patch` steps make one token (patch=1: one time step a token). By default the smallest patch that keeps the
    longest series within `max_tokens` tokens (64): a frozen 6-layer backbone costs ~5 s a step on 2 CPU cores at
    150 tokens × 32, so GunPoint (150 steps) gets patch 3 → 50 tokens, as patching time-series transformers do.
    """
    from aeon.datasets import load_from_ts_file  # local file reader; aeon's load_classification may download

    available = shipped_datasets()
    by_lower = {n.lower(): n for n in available}
    if name.lower() not in by_lower:
        raise FPTError(f"no UCR/UEA data set {name!r} ships with aeon (offline); choose from: {', '.join(available)}")
    name = by_lower[name.lower()]
    if not 0.0 < val_fraction < 1.0:
        raise FPTError(f"task argument val_fraction must be between 0 and 1, got {val_fraction}")
    train_file, test_file = available[name]

    x_train, y_train, meta = load_from_ts_file(str(train_file), return_meta_data=True)
    x_test, y_test = load_from_ts_file(str(test_file))
    classes = _natural_order({str(c) for c in [*meta["class_values"], *y_train, *y_test]})
    index = {c: i for i, c in enumerate(classes)}
    train_labels = np.array([index[c] for c in y_train])
    test_labels = np.array([index[c] for c in y_test])
    series, test_series = _series(x_train), _series(x_test)
    check_positive(max_tokens=max_tokens)
    if patch is None:
        patch = -(-max(len(x) for x in series + test_series) // max_tokens)
    check_positive(patch=patch)

    try:
        train_idx, val_idx = stratified_split(train_labels, (1 - val_fraction, val_fraction), split_seed)
    except ValueError as e:  # scikit-learn: a class with one example, or fewer val examples than classes
        raise FPTError(
            f"ucr:{name}: cannot split {len(series)} training series stratified with val_fraction={val_fraction}: {e}"
        ) from None

    # Statistics of the training split only, per channel over all its time steps; missing values (NaN) become 0.
    fit = np.concatenate([series[i] for i in train_idx])
    mean, std = np.nanmean(fit, axis=0), np.nanstd(fit, axis=0)
    std = np.where(std > 0, std, 1.0)
    missing = int(sum(np.isnan(x).sum() for x in series + test_series))

    def encode(xs: list[np.ndarray]):
        tokens = [torch.from_numpy(_tokens(np.nan_to_num((x - mean) / std), patch)) for x in xs]
        return torch.stack(tokens) if len({t.shape[0] for t in tokens}) == 1 else tokens

    parts = {
        "train": ([series[i] for i in train_idx], train_labels[train_idx]),
        "val": ([series[i] for i in val_idx], train_labels[val_idx]),
        "test": (test_series, test_labels),
    }
    splits = {s: TensorSplit(encode(xs), ys) for s, (xs, ys) in parts.items()}
    lengths = [len(x) for x in series + test_series]
    channels = series[0].shape[1]
    spec = TaskSpec(
        f"ucr:{name}",
        "time series",
        "features",
        input_dim=patch * channels,
        num_classes=len(classes),
        max_tokens=-(-max(lengths) // patch),
        # Mean over tokens: a class may show anywhere in a series, and the default backbone (MiniLM)
        # was trained to give sentence embeddings by mean pooling.
        readout="mean",
        default_steps=200,
        default_eval_every=50,
        label_names=tuple(classes),
    )
    info = {
        "source": str(train_file.parent),
        "files": [train_file.name, test_file.name],
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "patch": patch,
        "channels": channels,
        "series_length": {"min": min(lengths), "max": max(lengths)},
        "missing_values": missing,
        "standardise": {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()},
    }
    return Task(spec, splits, info)
