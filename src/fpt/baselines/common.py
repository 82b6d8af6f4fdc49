"""What the baselines share: the raw input as one flat vector, output counts, widths and parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from fpt.errors import FPTError
from fpt.freeze import GROUPS
from fpt.tasks import TaskSpec


def token_dim(spec: TaskSpec) -> int:
    """Features per token of the raw input: input_dim, or one-hot width (padding id 0 excluded) for token ids."""
    return spec.input_dim - 1 if spec.input == "tokens" else spec.input_dim


def flat_size(spec: TaskSpec) -> int:
    return spec.max_tokens * token_dim(spec)


def padded_input(x: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
    """x (B, T, d) features or (B, T) token ids, zero-padded by collate → (B, max_tokens, d') with ids one-hot (the
    padding id is the zero vector), zero-padded to the task's longest sequence so every position has its weights."""
    if spec.input == "tokens":
        x = nn.functional.one_hot(x, spec.input_dim)[..., 1:].float()  # (B, T, V - 1)
    if x.shape[1] > spec.max_tokens:
        raise FPTError(f"a sequence of {x.shape[1]} tokens is longer than task {spec.name!r}'s {spec.max_tokens}")
    return nn.functional.pad(x, (0, 0, 0, spec.max_tokens - x.shape[1]))


def num_predictions(spec: TaskSpec) -> int:
    """K: predictions per example (bit-xor: 5 bits, bit-memory: 1000, classification: 1)."""
    return spec.num_outputs * spec.predictions_per_token


def groups(**members: nn.Module | list[nn.Parameter]) -> dict[str, list[nn.Parameter]]:
    """Every group of fpt.freeze.GROUPS, empty unless given: groups(output=self.head)."""
    unknown = set(members) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}")
    return {
        g: list(members[g].parameters()) if isinstance(members.get(g), nn.Module) else list(members.get(g, []))
        for g in GROUPS
    }


def baseline_width(cfg) -> int:
    """cfg.width, else the backbone's hidden size, so a baseline's head sees as many features as FPT's."""
    if cfg.width:
        return cfg.width
    from fpt.backbones import get_backbone

    with torch.random.fork_rng():  # building the backbone draws random weights; keep the baseline's init unchanged
        return get_backbone(cfg.backbone, "random", cfg.backbone_path, 0.0).hidden_size
