"""Full-split evaluation, and what a run keeps of its validations: the best, patience and the learning curve."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from fpt import freeze
from fpt.distributed import Group
from fpt.errors import FPTError
from fpt.tasks import collate


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast for precision "bf16" (weights, gradients and optimizer state stay fp32); a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    split: Dataset,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    group: Group | None = None,
    metric: str = "accuracy",
) -> dict[str, float]:
    """Accuracy (over every prediction: per bit for the bit tasks) and loss on a whole split; for a regression split
    (float labels, see fpt.tasks.base.RegressionSplit) MSE, MAE and MASE in the data's own units, the loss on the
    normalised targets, and `score` = minus the task's `metric` (higher is better, as accuracy). Sums stay on the
    device until the split is done: one sync per evaluation, not per batch. In a data-parallel run each process
    evaluates its share of the split and the sums are added up."""
    group = group or Group()
    was_training = model.training
    model.eval()
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    shard = Subset(split, group.shard(len(split))) if group.world > 1 else split  # type: ignore[arg-type]  # sized
    for x, mask, y in DataLoader(shard, batch_size=batch_size, collate_fn=collate):
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        with autocast(precision, device):
            logits = model(x, mask)  # (B, K, C)
        sums += regression_sums(logits[..., 0].float(), y) if y.is_floating_point() else classification_sums(logits, y)
    model.train(was_training)
    return summarise(group.sum(sums).tolist(), split_is_regression(split), metric)


def summarise(totals: list[float], regression: bool, metric: str) -> dict[str, float]:
    """A split's metrics from the sums of `classification_sums` or `regression_sums`."""
    if not regression:
        loss, correct, total = totals[:3]
        return {"accuracy": correct / total, "loss": loss / total}
    loss, squared, absolute, scaled, total, scaled_total = totals
    metrics = {"mse": squared / total, "mae": absolute / total, "loss": loss / total}
    if scaled_total:
        metrics["mase"] = scaled / scaled_total
    if metric not in metrics:
        raise FPTError(
            f"cannot compute {metric}: no series has a MASE scale (its training region's seasonal naive forecast is "
            f"exact); choose another season"
        )
    return {**metrics, "score": -metrics[metric]}


def score_predictions(split: Dataset, predicted, metric: str) -> dict[str, float]:
    """The metrics of `evaluate` for a fitted model's predictions on a whole split: class indices (N,), or values in
    the data's units (N, K) for a regression split. Classification has no loss here (no probabilities)."""
    labels = split.labels  # type: ignore[attr-defined]
    predicted = torch.as_tensor(predicted)
    if not labels.is_floating_point():
        correct = float((predicted.reshape(-1) == labels[:, 0]).sum())
        return {"accuracy": correct / len(labels)}
    offset, scale = labels[..., 1].double(), labels[..., 2].double()
    normalised = (predicted.double().reshape(offset.shape) - offset) / scale
    return summarise(regression_sums(normalised, labels).tolist(), True, metric)


def classification_sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(summed loss, correct predictions, predictions, 0, 0, 0) of a batch: logits (B, K, C), labels (B, K)."""
    loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
    correct = (logits.argmax(-1) == y).sum()
    zero = loss.new_zeros(())
    return torch.stack([loss, correct.to(loss.dtype), loss.new_tensor(float(y.numel())), zero, zero, zero]).double()


def regression_sums(predicted: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(summed squared error on normalised targets, squared error, absolute error, MASE-scaled absolute error,
    predictions, predictions with a MASE scale) of a batch: predicted (B, K) normalised, y (B, K, 4)."""
    target, offset, scale, mase_scale = y.double().unbind(-1)
    predicted = predicted.double()
    error = (predicted - target) * scale  # in the data's units (the offset cancels)
    has_scale = torch.isfinite(mase_scale)
    scaled = torch.where(has_scale, error.abs() / mase_scale.where(has_scale, 1.0), 0.0)
    return torch.stack(
        [
            ((predicted - target) ** 2).sum(),
            (error**2).sum(),
            error.abs().sum(),
            scaled.sum(),
            error.new_tensor(float(error.numel())),
            has_scale.sum().double(),
        ]
    )


def split_is_regression(split: Dataset) -> bool:
    labels = getattr(split, "labels", None)
    return labels is not None and labels.is_floating_point()


def score(metrics: dict[str, float]) -> float:
    """The number validation maximises: accuracy, or minus the regression task's metric (-inf before any)."""
    return metrics.get("accuracy", metrics.get("score", -math.inf))


COUNTERS = ("since_best", "best_accuracy", "samples", "train_seconds", "stopped")  # a checkpoint's "counters"


@dataclass
class Tracker:
    """The training loop's state after `step` steps: the best on validation (its metrics and trained tensors),
    patience, the learning curve and the throughput counters. A checkpoint holds it (fpt.shipping.checkpoint); a
    resumed run starts from it."""

    best_state: dict[str, torch.Tensor]  # the trained groups (fpt.freeze.trained_state) at the best validation
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"step": 0, "loss": math.inf})
    curve: list[dict[str, Any]] = field(default_factory=list)
    since_best: int = 0  # validations since the accuracy last rose
    best_accuracy: float = -math.inf  # the best validation score (accuracy, or minus a regression metric)
    samples: int = 0  # training rows seen, over all processes
    train_seconds: float = 0.0
    stopped: bool = False  # patience ran out at `step`: a resumed run goes straight to the test split

    def update(
        self,
        step: int,
        losses: list[float],
        val: dict[str, float],
        lr: float,
        model: nn.Module,
        groups: tuple[str, ...],
        patience: int | None,
    ) -> dict[str, Any]:
        """Record the validation `val` after `step` steps (`losses`: the training losses since the last one) and
        return its row of the curve. The best kept is the best on validation (accuracy, then loss); patience counts
        validations without a better accuracy, so a run whose accuracy has plateaued stops even while its loss
        still falls."""
        row = {
            "step": step,
            "train_loss": sum(losses) / len(losses),
            **{f"val_{name}": value for name, value in val.items()},
            "lr": lr,
            "train_seconds": round(self.train_seconds, 3),
        }
        self.step = step
        self.curve.append(row)
        if score(val) > self.best_accuracy:
            self.best_accuracy, self.since_best = score(val), 0
        else:
            self.since_best += 1
        if (score(val), -val["loss"]) > (score(self.best), -self.best["loss"]):
            self.best = {"step": step, **val}
            self.best_state = freeze.trained_state(model, groups)
        self.stopped = patience is not None and self.since_best >= patience
        return row

    def metadata(self) -> dict[str, Any]:
        """What a checkpoint's JSON header holds of it; `best_state` goes in as tensors."""
        counters = {name: getattr(self, name) for name in COUNTERS}
        return {"step": self.step, "best": self.best, "curve": self.curve, "counters": counters}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], best_state: dict[str, torch.Tensor]) -> Tracker:
        counters = {name: meta["counters"][name] for name in COUNTERS}
        return cls(best_state, step=meta["step"], best=meta["best"], curve=meta["curve"], **counters)
