"""The task interface: a spec (shapes, classes, readout, default budget) and train/val/test splits.

An example is `(x, y)`: x is (T, input_dim) float features, or (T,) int64 token ids (0 is padding, so real
ids start at 1); y is (num_outputs * predictions_per_token,) int64 labels, or for a regression task (K, 4) float32
rows of (normalised target, offset, scale, MASE scale): the model predicts the normalised target, and
target · scale + offset is the value in the data's own units (see `RegressionSplit`). Sequences may differ in length
across examples: batches are padded to their own longest sequence (`collate`), never truncated.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from fpt.errors import FPTError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about a task's inputs and outputs."""

    name: str
    modality: str  # "bits", "symbolic", "image", "time series", "protein", ...
    input: Literal["features", "tokens"]
    input_dim: int  # features per token, or vocabulary size (padding id 0 included) for tokens
    num_classes: int
    max_tokens: int  # longest sequence in any split
    num_outputs: int = 1  # read out from the last `num_outputs` tokens (readout "last"); 1 for "mean"
    predictions_per_token: int = 1  # independent predictions from each read-out token (bit memory: 50 bits)
    readout: Literal["last", "mean"] = "last"
    default_steps: int = 1000  # the training budget that reaches the task's reference accuracy on minilm
    default_eval_every: int = 100
    label_names: tuple[str, ...] | None = None
    objective: Literal["classification", "regression"] = "classification"  # regression: num_classes is 1
    metric: str = "accuracy"  # what selects on validation and heads the report: accuracy, or mse / mae / mase

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shape(self) -> str:
        dim = f"vocab {self.input_dim}" if self.input == "tokens" else str(self.input_dim)
        return f"{self.max_tokens} tokens × {dim}"


@dataclass
class Task:
    """A task: its spec, its three splits and a record of how they were made (sizes, seeds, files)."""

    spec: TaskSpec
    splits: dict[str, Dataset]
    info: dict[str, Any] = field(default_factory=dict)
    # What the classical baselines fit on, per split, before any recipe (time series: fpt.baselines.classical).
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ValueError(f"task {self.spec.name!r} lacks splits {missing}")
        self.info.setdefault("split_sizes", {s: len(self.splits[s]) for s in SPLITS})


class TensorSplit(Dataset):
    """A split held in memory: a list (or array) of inputs and a (N, K) label array."""

    def __init__(self, inputs, labels) -> None:
        self.inputs = inputs
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(len(labels), -1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs[i]
        return (x if isinstance(x, torch.Tensor) else torch.as_tensor(x)), self.labels[i]


class RegressionSplit(Dataset):
    """A regression split in memory: inputs and (N, K) float targets, with the per-example `offset` and `scale` that
    map the model's normalised outputs back to the data's units, and a per-example MASE scale (NaN: none)."""

    def __init__(self, inputs, targets, offset=0.0, scale=1.0, mase_scale=float("nan")) -> None:
        targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        offset, scale, mase_scale = (np.broadcast_to(np.asarray(v, dtype=np.float64), targets.shape)
                                     for v in (offset, scale, mase_scale))  # fmt: skip
        self.inputs = inputs
        self.labels = torch.as_tensor(np.stack([(targets - offset) / scale, offset, scale, mase_scale], -1).astype(
            np.float32))  # fmt: skip  # (N, K, 4)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs[i]
        return (x if isinstance(x, torch.Tensor) else torch.as_tensor(x)), self.labels[i]


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest sequence → x (B, T[, d]), mask (B, T) bool, y (B, K)."""
    xs, ys = zip(*batch, strict=True)
    lengths = [x.shape[0] for x in xs]
    longest = max(lengths)
    x = xs[0].new_zeros((len(xs), longest, *xs[0].shape[1:]))
    mask = torch.zeros(len(xs), longest, dtype=torch.bool)
    for i, (xi, n) in enumerate(zip(xs, lengths, strict=True)):
        x[i, :n] = xi
        mask[i, :n] = True
    return x, mask, torch.stack(ys)


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices for a seeded stratified split of `labels` into parts of the given fractions (summing to 1)."""
    from sklearn.model_selection import train_test_split

    rest = np.arange(len(labels))
    parts = []
    remaining = 1.0
    for frac in fractions[:-1]:
        take, rest = train_test_split(rest, train_size=frac / remaining, stratify=labels[rest], random_state=seed)
        parts.append(np.sort(take))
        remaining -= frac
    parts.append(np.sort(rest))
    return parts


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise FPTError(f"task argument {name} must be a positive integer, got {value!r}")


def drop_longer(
    data: dict[str, tuple[list, Any]], max_len: int, task: str, unit: str = "tokens"
) -> tuple[dict[str, tuple[list, list]], dict[str, int]]:
    """Drop (never truncate) the examples longer than `max_len` from every split of `data` (split → (xs, ys)) and say
    how many on stderr; a split left empty is an error. Returns the kept data and the count dropped per split."""
    kept, dropped = {}, {}
    for split, (xs, ys) in data.items():
        keep = [i for i, x in enumerate(xs) if len(x) <= max_len]
        if not keep:
            raise FPTError(
                f"{task}: max_len={max_len} leaves no {split} examples (the shortest has {min(map(len, xs))} {unit})"
            )
        kept[split], dropped[split] = ([xs[i] for i in keep], [ys[i] for i in keep]), len(xs) - len(keep)
    if sum(dropped.values()):
        total = sum(len(xs) for xs, _ in data.values())
        print(
            f"fpt: {task}: dropped {sum(dropped.values())} of {total} examples longer than max_len={max_len} {unit} "
            f"({', '.join(f'{s} {n}' for s, n in dropped.items())})",
            file=sys.stderr,
        )
    return kept, dropped
