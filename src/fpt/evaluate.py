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
) -> dict[str, float]:
    """Accuracy (over every prediction: per bit for the bit tasks) and loss on a whole split. Sums stay on the device
    until the split is done: one sync per evaluation, not per batch. In a data-parallel run each process evaluates
    its share of the split and the sums are added up."""
    group = group or Group()
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct predictions, predictions
    shard = Subset(split, group.shard(len(split))) if group.world > 1 else split
    for x, mask, y in DataLoader(shard, batch_size=batch_size, collate_fn=collate):
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        with autocast(precision, device):
            logits = model(x, mask)  # (B, K, C)
        sums[0] += nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        sums[1] += (logits.argmax(-1) == y).sum()
        sums[2] += y.numel()
    model.train(was_training)
    loss, correct, total = group.sum(sums).tolist()
    return {"accuracy": correct / total, "loss": loss / total}


COUNTERS = ("since_best", "best_accuracy", "samples", "train_seconds", "stopped")  # a checkpoint's "counters"


@dataclass
class Tracker:
    """The training loop's state after `step` steps: the best on validation (its metrics and trained tensors),
    patience, the learning curve and the throughput counters. A checkpoint holds it (fpt.shipping.checkpoint); a
    resumed run starts from it."""

    best_state: dict[str, torch.Tensor]  # the trained groups (fpt.freeze.trained_state) at the best validation
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"step": 0, "accuracy": -1.0, "loss": math.inf})
    curve: list[dict[str, Any]] = field(default_factory=list)
    since_best: int = 0  # validations since the accuracy last rose
    best_accuracy: float = -1.0
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
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "lr": lr,
            "train_seconds": round(self.train_seconds, 3),
        }
        self.step = step
        self.curve.append(row)
        if val["accuracy"] > self.best_accuracy:
            self.best_accuracy, self.since_best = val["accuracy"], 0
        else:
            self.since_best += 1
        if (val["accuracy"], -val["loss"]) > (self.best["accuracy"], -self.best["loss"]):
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
