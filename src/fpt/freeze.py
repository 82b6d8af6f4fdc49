"""One rule decides what trains: a list of parameter groups.

The same group list sets requires_grad, builds the optimizer's parameter groups, counts trainable parameters and
chooses what a saved patch contains.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fpt.errors import FPTError

# Parameter groups of a backbone (each family says which of its parameters are in which); FPT adds input and output,
# and "adapter": the tensors a method (fpt.methods: LoRA, (IA)³, LN tuning, BitFit) adds to the backbone or takes out
# of its groups; empty under the paper's FPT and for the baselines.
BACKBONE_GROUPS = ("attention", "feedforward", "layernorm", "positional", "embedding")
GROUPS = ("input", "output", *BACKBONE_GROUPS, "adapter")
PAPER_GROUPS = ("input", "output", "layernorm", "positional")  # the paper's FPT


def parse_groups(spec: str | Iterable[str]) -> tuple[str, ...]:
    """ "input,output,layernorm" → ("input", "output", "layernorm"); "all" → every group (full fine-tuning)."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return GROUPS
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise FPTError(
            f"unknown parameter group {unknown[0] if unknown else spec!r}; "
            f"choose a comma list of: {', '.join(GROUPS)}, or all"
        )
    return tuple(g for g in GROUPS if g in names)  # canonical order


def named_groups(
    model: nn.Module, groups: dict[str, list[nn.Parameter]] | None = None
) -> dict[str, dict[str, nn.Parameter]]:
    """{group: {parameter name: parameter}}, checking that the groups (default: `model.parameter_groups()`) partition
    the model's parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = model.parameter_groups() if groups is None else groups  # type: ignore[operator]  # via Module.__getattr__
    if set(groups) != set(GROUPS):
        raise ValueError(f"{type(model).__name__} groups {sorted(groups)} differ from {GROUPS}")
    out: dict[str, dict[str, nn.Parameter]] = {}
    seen: set[int] = set()
    for group in GROUPS:
        out[group] = {}
        for p in groups[group]:
            if id(p) in seen:
                raise ValueError(f"parameter {names.get(id(p))} is in two groups")
            seen.add(id(p))
            out[group][names[id(p)]] = p
    missing = [n for i, n in names.items() if i not in seen]
    if missing:
        raise ValueError(f"parameters in no group: {missing[:5]}")
    return out


def layer_of(model: nn.Module) -> dict[str, int | None]:
    """Parameter name → the index of the backbone layer (block) that holds it, None outside the layers (input layer,
    head, embeddings, final norm; every parameter of a model without a backbone)."""
    backbone = getattr(model, "backbone", None)
    index = {id(p): i for i, layer in enumerate(backbone.layers()) for p in layer.parameters()} if backbone else {}
    return {name: index.get(id(p)) for name, p in model.named_parameters()}


def apply(model: nn.Module, groups: Iterable[str]) -> dict[str, int]:
    """Set requires_grad by group; returns {"trainable_params", "total_params"}."""
    chosen = set(groups)
    for group, members in named_groups(model).items():
        for p in members.values():
            p.requires_grad_(group in chosen)
    return count(model)


def count(model: nn.Module) -> dict[str, int]:
    params = list(model.parameters())
    return {
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "total_params": sum(p.numel() for p in params),
    }


def optimizer_groups(model: nn.Module, groups: Iterable[str], weight_decay: float) -> list[dict]:
    """Optimizer parameter groups for the trained groups: weight decay on matrices only (not norms, biases,
    positions)."""
    chosen = set(groups)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for group, members in named_groups(model).items():
        if group not in chosen:
            continue
        for p in members.values():
            (decay if p.ndim >= 2 and group not in ("layernorm", "positional") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def trained_state(model: nn.Module, groups: Iterable[str]) -> dict[str, torch.Tensor]:
    """The tensors of the trained groups, by parameter name: a best-checkpoint or a task patch."""
    chosen = set(groups)
    return {
        name: p.detach().clone()
        for group, members in named_groups(model).items()
        if group in chosen
        for name, p in members.items()
    }
