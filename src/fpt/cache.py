"""The paper's "reservoir": the frozen features computed once per example, then only the head trains, on the cache.

With `train: output` nothing before the head trains, so the read-out features of an example (FPT.forward_features,
(k, D)) never change: `reservoir` computes them once for every split (eval mode: no dropout, no augmentation) and
hands the training loop a task whose splits are those features and the same model run from its head (HeadOnly). The
loop, the evaluation, the result files and the saved trained weights are those of every run (a reservoir run's patch
loads like any FPT patch); an epoch costs a linear layer instead of a backbone pass.
`task_info.reservoir` in result.json records the one-off cost per split (`cache_seconds`) and the feature shape; an
epoch's cost is len(train) / samples_per_second, to compare with an uncached `train: output` run's.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fpt.errors import FPTError
from fpt.tasks import Task, collate


class CachedSplit(Dataset):
    """Read-out features (N, k, D) and labels (N, K) held in memory: example i is (features[i], labels[i])."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[i], self.labels[i]


class HeadOnly(nn.Module):
    """A model run from its head: forward(features (B, k, D), mask) = model.forward_head(features).

    It holds the model's own submodules under the same names, so its parameters, groups, trained state, checkpoints
    and saved patches are exactly those of the full model; only its forward starts at the head.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self.forward_head = model.forward_head
        self.parameter_groups = model.parameter_groups

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_head(features)


@torch.no_grad()
def features_of(model: nn.Module, split: Dataset, batch_size: int, device: torch.device) -> CachedSplit:
    """Every example's read-out features, in eval mode and without augmentation, kept on the CPU."""
    if getattr(split, "augment", False):  # one frozen view per example: a random crop would be frozen in too
        split = copy.copy(split)
        split.augment = False
    features, labels = [], []
    for x, mask, y in DataLoader(split, batch_size=batch_size, collate_fn=collate):
        features.append(model.forward_features(x.to(device), mask.to(device)).float().cpu())  # (B, k, D)
        labels.append(y)
    return CachedSplit(torch.cat(features), torch.cat(labels))


def reservoir(model: nn.Module, task: Task, batch_size: int, device: torch.device) -> tuple[Task, HeadOnly]:
    """(the task with cached-feature splits, the model run from its head): what the loop trains for cache_features."""
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise FPTError(
            f"cache_features needs a model with forward_features and forward_head (fpt); "
            f"{type(model).__name__} has none"
        )
    was_training = model.training
    model.eval()
    splits, seconds = {}, {}
    for name, split in task.splits.items():
        started = time.perf_counter()
        splits[name] = features_of(model, split, batch_size, device)
        seconds[name] = round(time.perf_counter() - started, 3)
    model.train(was_training)
    info = {
        **task.info,
        "reservoir": {"cache_seconds": seconds, "feature_shape": list(splits["train"].features.shape[1:])},
    }
    return Task(task.spec, splits, info), HeadOnly(model)
