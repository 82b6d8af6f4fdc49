"""Gradual unfreezing (ULMFiT-style): groups, or one layer's part of a group, start training at given steps.

    unfreeze: "attention@200,feedforward@400"               # whole groups
    unfreeze: "attention/-1@100,attention/-2@200,attention/0@300"  # a 3-layer body's attention, top-down

Each entry GROUP@STEP or GROUP/LAYER@STEP (LAYER counted from 0, or from the top when negative) trains after STEP
steps. Every group a schedule names is among the run's `train` groups (TrainConfig adds it), and a group named by
layer must have every layer named, so the one rule of fpt.freeze is unchanged: those tensors are counted,
checkpointed and exported, and they are in the optimizer from the start. Until its step a tensor only has
requires_grad off, so it gets no gradient, and torch's Adam and AdamW skip a tensor without a gradient: no moments
and no step count until its first update, exactly as a parameter group added to the optimizer at the boundary would
have. Which tensors train is a function of the step alone, so a run resumed from a checkpoint (at any step, on
either side of a boundary) trains the same tensors as an unbroken one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from fpt import freeze
from fpt.errors import FPTError

ENTRY = re.compile(r"^(?P<group>[a-z]+)(?:/(?P<layer>-?\d+))?@(?P<step>\d+)$")


@dataclass(frozen=True)
class Stage:
    """One entry of a schedule: `group` (of one layer, or all of it when `layer` is None) trains after `step` steps."""

    group: str
    layer: int | None
    step: int


def parse_schedule(spec: str | None) -> tuple[Stage, ...]:
    """ "attention@200,feedforward/-1@400" → its stages; None or "" → none. A bad entry is one FPTError line."""
    stages = []
    for entry in (e.strip() for e in (spec or "").split(",")):
        if not entry:
            continue
        match = ENTRY.match(entry)
        if match is None or match["group"] not in freeze.GROUPS:
            raise FPTError(
                f"unfreeze entry {entry!r}: write GROUP@STEP or GROUP/LAYER@STEP (e.g. attention/-1@200), GROUP one "
                f"of {', '.join(freeze.GROUPS)}"
            )
        layer = None if match["layer"] is None else int(match["layer"])
        stages.append(Stage(match["group"], layer, int(match["step"])))
    return tuple(stages)


class Unfreezing:
    """A model's schedule: `start[name]`, the step after which each scheduled tensor trains (its earliest stage)."""

    def __init__(self, model: nn.Module, spec: str) -> None:
        named, layer_of = freeze.named_groups(model), freeze.layer_of(model)
        layers = len(model.backbone.layers()) if hasattr(model, "backbone") else 0
        self.params = dict(model.named_parameters())
        self.start: dict[str, int] = {}
        for stage in parse_schedule(spec):
            layer = stage.layer
            if layer is not None and not -layers <= layer < layers:
                raise FPTError(f"unfreeze: layer {layer} of a backbone with {layers} layers (0..{layers - 1}, or -1..)")
            layer = None if layer is None else layer % layers
            for name in named[stage.group]:
                if layer is None or layer_of[name] == layer:
                    self.start[name] = min(stage.step, self.start.get(name, stage.step))
        for group in {stage.group for stage in parse_schedule(spec)}:
            left = sorted({layer_of[n] for n in named[group] if n not in self.start}, key=str)
            if left:  # every tensor of `train`'s groups trains at some step: the one rule counts and saves them all
                raise FPTError(f"unfreeze names {group} by layer but not its layer(s) {left}: give each a step")
        self.applied: int | None = None  # the step whose set of tensors requires_grad now follows

    def trains(self, name: str, step: int) -> bool:
        """Whether scheduled tensor `name` trains in optimizer step `step` (1-based): after its stage's step."""
        return self.start[name] < step

    def apply(self, step: int) -> bool:
        """Set requires_grad of the scheduled tensors for optimizer step `step`; True when that changed anything (the
        loop then collects the trained tensors again, for gradient clipping)."""
        before = self.applied
        self.applied = step
        if before is not None and all(self.trains(n, before) == self.trains(n, step) for n in self.start):
            return False
        for name in self.start:
            self.params[name].requires_grad_(self.trains(name, step))
        return True
