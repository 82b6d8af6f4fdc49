"""`ucr:<Name>`: a UCR/UEA time-series classification (or regression) set from the .ts files that aeon ships.

Only files already on disk are read (aeon's local `load_from_ts_file`); nothing is downloaded. Validation is a
seeded stratified part of the shipped TRAIN file, test is the shipped TEST file. A token is one time step (input_dim =
channels) or, with `patch=p`, p consecutive steps (input_dim = p × channels, the tail padded with zeros). Values are
standardised per channel with the mean and std of the training split only. Unequal-length sets (JapaneseVowels,
PickupGestureWiimoteZ) stay variable-length: batches are padded by `collate`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import Task
from fpt.tasks.series import read_ts
from fpt.tasks.timeseries import MAX_TOKENS, labelled_task, make_recipe


def aeon_data_dir() -> Path:
    """aeon's bundled data folder, found without importing aeon."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or spec.origin is None:
        raise FPTError("ucr tasks read the data sets shipped with aeon; install it: pip install aeon")
    return Path(spec.origin).parent / "datasets" / "data"


def objective_of(path: Path) -> str | None:
    """What a .ts header declares: classification (`@classLabel true ...`), regression (`@targetLabel true`), or
    None (no labels)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            words = line.lower().split()
            if words[:1] == ["@data"]:
                return None
            if words[:2] == ["@classlabel", "true"]:
                return "classification"
            if words[:2] == ["@targetlabel", "true"]:
                return "regression"
    return None


def shipped_datasets(objective: str | None = "classification") -> dict[str, tuple[Path, Path]]:
    """Name → (TRAIN, TEST) .ts files of every classification (or regression; None: both) set shipped with aeon,
    sorted by name."""
    found = {}
    for train in sorted(aeon_data_dir().glob("*/*_TRAIN.ts")):
        test = train.with_name(train.name.replace("_TRAIN.ts", "_TEST.ts"))
        kind = objective_of(train) if test.exists() else None
        if kind is not None and objective in (None, kind):
            found[train.name.removesuffix("_TRAIN.ts")] = (train, test)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


@TASKS.register(
    "ucr", "time series: a UCR/UEA classification or regression set shipped with aeon, a patch a token", prefix=True
)
def ucr(
    name: str,
    patch: int | None = None,
    max_tokens: int = MAX_TOKENS,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    stride: int | None = None,
    normalise: str = "global",
    channels: str = "mixed",
) -> Task:
    """`ucr:GunPoint`, `ucr:BasicMotions`, `ucr:Covid3Month` (regression), ...: the shipped TRAIN file split into
    train/val, the TEST file as test.

    `patch` steps make one token (patch=1: one time step a token). By default the smallest patch that keeps the
    longest series within `max_tokens` tokens (64): a frozen 6-layer backbone costs ~5 s a step on 2 CPU cores at
    150 tokens × 32, so GunPoint (150 steps) gets patch 3 → 50 tokens, as patching time-series transformers do.
    `stride`, `normalise` and `channels` are the recipe of the `ts` task (fpt.tasks.timeseries).
    """
    available = shipped_datasets(None)
    by_lower = {n.lower(): n for n in available}
    if name.lower() not in by_lower:
        raise FPTError(f"no UCR/UEA data set {name!r} ships with aeon (offline); choose from: {', '.join(available)}")
    name = by_lower[name.lower()]
    train_file, test_file = available[name]
    train, test = read_ts(train_file, missing="zero"), read_ts(test_file, missing="zero")
    recipe = make_recipe(train.series + test.series, patch, stride, normalise, channels, max_tokens)
    info = {"source": str(train_file.parent), "files": [train_file.name, test_file.name]}
    return labelled_task(f"ucr:{name}", train, test, recipe, val_fraction, split_seed, info)
