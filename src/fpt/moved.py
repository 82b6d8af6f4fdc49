"""What moved in a run: the relative change ‖θ − θ₀‖ / ‖θ₀‖ of every trained tensor, per layer and group.

fpt.train writes it as moved.json beside result.json, for the best-on-validation weights (those a patch exports)
against the run's starting values (pretrained weights, initialised input layer, head and adapters). A method that
changes frozen matrices by something other than its own tensors (LoRA: B·A·scale) also gets the norm of that update,
relative to the weight it changes. `cells` sums each layer × group:

    relative change of a cell = sqrt(Σ ‖θ − θ₀‖²) / sqrt(Σ ‖θ₀‖²) over its tensors

(for the adapter group of a method with updates, over the updates against their weights instead: a LoRA B starts at
zero, so its own relative change is undefined). Layers are the backbone's blocks (0 = first); tensors outside them
(input layer, head, embeddings, positions, final norm) have layer null. `fpt report` draws the cells as a heatmap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from fpt import freeze

MOVED_FILE = "moved.json"
MOVED_FORMAT = "fpt-moved/1"


def norm(t: torch.Tensor) -> float:
    return float(t.detach().double().norm())


def tensor_rows(model: nn.Module, initial: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One row per trained tensor (those in `initial`): its group, layer, size, ‖θ₀‖, ‖θ − θ₀‖ and their ratio."""
    layer_of = freeze.layer_of(model)
    rows = []
    for group, members in freeze.named_groups(model).items():
        for name, p in members.items():
            if name not in initial:
                continue
            start = initial[name].to(p.device)
            base, change = norm(start), norm(p.detach().double() - start.double())
            rows.append({
                "name": name, "group": group, "layer": layer_of[name], "numel": p.numel(), "initial_norm": base,
                "change_norm": change, "relative_change": change / base if base > 0 else None,
            })  # fmt: skip
    return rows


def update_rows(model: nn.Module) -> list[dict[str, Any]]:
    """One row per weight a method changes through an update of its own (LoRA): ‖ΔW‖, ‖W₀‖ and their ratio."""
    method, backbone = getattr(model, "method", None), getattr(model, "backbone", None)
    if method is None or backbone is None:
        return []
    index = {id(m): i for i, layer in enumerate(backbone.layers()) for m in layer.modules()}
    modules = dict(backbone.model.named_modules())
    rows = []
    for name, (delta, weight) in method.updates(backbone).items():
        change, base = norm(delta), norm(weight)
        rows.append({
            "name": f"backbone.model.{name}", "group": "adapter", "layer": index.get(id(modules[name])),
            "numel": delta.numel(), "initial_norm": base, "change_norm": change,
            "relative_change": change / base if base > 0 else None,
        })  # fmt: skip
    return rows


def cells(tensors: list[dict[str, Any]], updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Layer × group sums (see the module's docstring), in group order then layer order (null last)."""
    rows = [r for r in tensors if not (updates and r["group"] == "adapter")] + updates
    sums: dict[tuple[str, int | None], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        cell = sums[(r["group"], r["layer"])]
        cell[0] += r["change_norm"] ** 2
        cell[1] += r["initial_norm"] ** 2
        cell[2] += r["numel"]
    order = {g: i for i, g in enumerate(freeze.GROUPS)}
    keys = sorted(sums, key=lambda k: (order[k[0]], k[1] is None, k[1] or 0))
    return [
        {
            "group": g, "layer": layer, "numel": int(sums[(g, layer)][2]),
            "initial_norm": math.sqrt(sums[(g, layer)][1]), "change_norm": math.sqrt(sums[(g, layer)][0]),
            "relative_change": math.sqrt(sums[(g, layer)][0] / sums[(g, layer)][1]) if sums[(g, layer)][1] else None,
        }
        for g, layer in keys
    ]  # fmt: skip


def moved(model: nn.Module, initial: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The what-moved record of `model` now against its trained tensors' starting values `initial`
    (fpt.freeze.trained_state taken before the first step)."""
    tensors, updates = tensor_rows(model, initial), update_rows(model)
    backbone = getattr(model, "backbone", None)
    return {
        "format": MOVED_FORMAT,
        "layers": len(backbone.layers()) if backbone is not None else 0,
        "method": getattr(getattr(model, "method", None), "name", None) or "fpt",
        "cells": cells(tensors, updates),
        "tensors": tensors,
        "updates": updates,
    }
