"""`ts`: classification or regression on the user's own time series (.ts, .csv/.tsv, .npz), and the builder that
`ucr:<Name>` shares with it.

The TRAIN file gives train and validation (a seeded part of it: stratified for classes), the TEST file the test
split. Every series goes through the recipe (fpt.tasks.series.Recipe): normalised (by the training split's
per-channel statistics by default, or each series by its own), patched, made into mixed or channel-independent
tokens. A regression target is standardised with the training split's mean and std; metrics are in its own units.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import RegressionSplit, Task, TaskSpec, TensorSplit, check_positive, stratified_split
from fpt.tasks.series import Labelled, Recipe, global_stats, instance_stats, read_labelled

MAX_TOKENS = 64  # default bound on sequence length: sets the default patch


def natural_order(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def default_patch(lengths: list[int], max_tokens: int, channels: int, independent: bool) -> int:
    """The smallest patch that keeps the longest series (all its channels, for channel-independent tokens) within
    `max_tokens` tokens."""
    return -(-max(lengths) * (channels if independent else 1) // max_tokens)


def split_train(data: Labelled, val_fraction: float, split_seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and validation parts of the TRAIN file: stratified by class, seeded."""
    if not 0.0 < val_fraction < 1.0:
        raise FPTError(f"task argument val_fraction must be between 0 and 1, got {val_fraction}")
    if data.objective == "regression":
        order = np.random.default_rng(split_seed).permutation(len(data.series))
        cut = max(1, round(val_fraction * len(order)))
        if cut >= len(order):
            raise FPTError(f"{where}: {len(order)} training series are too few to keep {cut} for validation")
        return np.sort(order[cut:]), np.sort(order[:cut])
    codes = {c: i for i, c in enumerate(natural_order(set(data.labels.tolist())))}
    try:
        train, val = stratified_split(np.array([codes[c] for c in data.labels]), (1 - val_fraction, val_fraction),
                                      split_seed)  # fmt: skip
    except ValueError as e:  # scikit-learn: a class with one example, or fewer val examples than classes
        raise FPTError(
            f"{where}: cannot split {len(data.series)} training series stratified with val_fraction={val_fraction}: {e}"
        ) from None
    return train, val


def labelled_task(
    name: str,
    train: Labelled,
    test: Labelled,
    recipe: Recipe,
    val_fraction: float,
    split_seed: int,
    info: dict[str, Any],
) -> Task:
    """A classification or regression task from a TRAIN and a TEST set of labelled series."""
    channels = {s.shape[1] for s in train.series + test.series}
    if len(channels) > 1:
        raise FPTError(f"{name}: the TRAIN and TEST series have different channel counts ({sorted(channels)})")
    if train.objective != test.objective:
        raise FPTError(f"{name}: the TRAIN file is a {train.objective} set and the TEST file a {test.objective} set")
    (n_channels,) = channels
    train_idx, val_idx = split_train(train, val_fraction, split_seed, name)
    mean, std = global_stats([train.series[i] for i in train_idx])
    missing = int(sum(np.isnan(x).sum() for x in train.series + test.series))

    def encode(xs: list[np.ndarray]):
        if recipe.normalise == "global":
            xs = [(x - mean) / std for x in xs]
        elif recipe.normalise == "instance":
            xs = [(x - m) / s for x in xs for m, s in [instance_stats(np.nan_to_num(x))]]
        tokens = [torch.from_numpy(recipe.tokens(np.nan_to_num(x))) for x in xs]  # missing values (NaN) become 0
        return torch.stack(tokens) if len({t.shape[0] for t in tokens}) == 1 else tokens

    parts = {
        "train": ([train.series[i] for i in train_idx], train.labels[train_idx]),
        "val": ([train.series[i] for i in val_idx], train.labels[val_idx]),
        "test": (test.series, test.labels),
    }
    lengths = [len(x) for x in train.series + test.series]
    common = {
        "input": "features",
        "input_dim": recipe.input_dim(n_channels),
        "max_tokens": recipe.token_count(max(lengths), n_channels),
        # Mean over tokens: a class may show anywhere in a series, and the default backbone (MiniLM) was trained to
        # give sentence embeddings by mean pooling.
        "readout": "mean",
        "default_steps": 200,
        "default_eval_every": 50,
    }
    if train.objective == "regression":
        target_mean = float(train.labels[train_idx].mean())
        target_std = float(train.labels[train_idx].std()) or 1.0
        splits = {s: RegressionSplit(encode(xs), ys, target_mean, target_std) for s, (xs, ys) in parts.items()}
        spec = TaskSpec(name, "time series", num_classes=1, objective="regression", metric="mse", **common)
        info["target"] = {"mean": round(target_mean, 6), "std": round(target_std, 6)}
    else:
        classes = natural_order({str(c) for c in [*train.classes, *train.labels, *test.labels]})
        index = {c: i for i, c in enumerate(classes)}
        splits = {
            s: TensorSplit(encode(xs), np.array([index[str(c)] for c in ys], dtype=np.int64))
            for s, (xs, ys) in parts.items()
        }
        spec = TaskSpec(name, "time series", num_classes=len(classes), label_names=tuple(classes), **common)
    info |= {
        "split_seed": split_seed,
        "val_fraction": val_fraction,
        "patch": recipe.patch,
        "stride": recipe.step,
        "normalise": recipe.normalise,
        "channel_tokens": recipe.channels,
        "channels": n_channels,
        "series_length": {"min": min(lengths), "max": max(lengths)},
        "missing_values": missing,
    }
    if recipe.normalise == "global":
        info["standardise"] = {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}
    # What the classical baselines fit: the series as read (T, C) and the labels as class indices or targets.
    raw = {s: (xs, splits[s].labels[:, 0].numpy() if spec.objective == "classification" else np.asarray(ys, float))
           for s, (xs, ys) in parts.items()}  # fmt: skip
    return Task(spec, splits, info, raw)


def make_recipe(
    series: list[np.ndarray],
    patch: int | None,
    stride: int | None,
    normalise: str,
    channels: str,
    max_tokens: int,
) -> Recipe:
    check_positive(max_tokens=max_tokens)
    if patch is None:
        n_channels = series[0].shape[1]
        patch = default_patch([len(x) for x in series], max_tokens, n_channels, channels == "independent")
    check_positive(patch=patch)
    if stride is not None:
        check_positive(stride=stride)
    return Recipe(normalise, patch, stride, channels)  # type: ignore[arg-type]


@TASKS.register("ts", "time series: classification or regression on your own .ts, .csv or .npz TRAIN and TEST files")
def ts(
    train: str,
    test: str,
    label: int | str = 0,
    objective: str | None = None,
    patch: int | None = None,
    stride: int | None = None,
    normalise: str = "global",
    channels: str = "mixed",
    max_tokens: int = MAX_TOKENS,
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> Task:
    """`--task ts --task-args '{train: A_TRAIN.ts, test: A_TEST.ts}'`.

    Formats by extension: .ts (the UCR/UEA format: `@classLabel true ...` for classes, `@targetLabel true` for a
    regression target), .csv/.tsv (one univariate series a row, the label in column `label`: an index, or a header
    name), .npz (`X` (N, T) or (N, C, T), `y` (N,)). `objective` (classification or regression) is read from a .ts
    header; for .csv and .npz it is regression when labels are numbers and some not whole, unless given.
    Recipe: `patch` steps a token every `stride` steps (default: non-overlapping, the smallest patch that keeps
    series within `max_tokens` tokens), `normalise` global (the training split's per-channel statistics), instance
    (each series by its own) or none, `channels` mixed (a token holds every channel) or independent (one channel).
    """
    if objective not in (None, "classification", "regression"):
        raise FPTError(f"task argument objective must be classification or regression, got {objective!r}")
    train_set = read_labelled(train, label, objective)  # type: ignore[arg-type]
    test_set = read_labelled(test, label, objective or train_set.objective)  # type: ignore[arg-type]
    recipe = make_recipe(train_set.series + test_set.series, patch, stride, normalise, channels, max_tokens)
    name = f"ts:{Path(train).stem}"
    info = {"files": [str(Path(train).expanduser()), str(Path(test).expanduser())]}
    task = labelled_task(name, train_set, test_set, recipe, val_fraction, split_seed, info)
    if task.spec.max_tokens > 512:
        print(f"fpt: {name}: {task.spec.max_tokens} tokens a series; a larger patch is faster", file=sys.stderr)
    return task
