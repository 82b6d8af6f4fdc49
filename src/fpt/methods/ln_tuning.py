"""LayerNorm tuning through peft: trained copies of the backbone's norms, the originals frozen."""

from __future__ import annotations

from typing import Any

from fpt.backbones.base import Backbone
from fpt.methods.base import PeftMethod
from fpt.registry import METHODS


@METHODS.register(
    "ln-tuning",
    "LayerNorm tuning (Zhao et al. 2023): trained copies of the backbone's norms (peft LNTuningConfig); targets "
    "default to the modules of fpt's layernorm group",
    options=("targets",),
    default_train="input,output",
)
class LNTuning(PeftMethod):
    name = "ln-tuning"

    def config(self, backbone: Backbone) -> Any:
        from peft import LNTuningConfig

        return LNTuningConfig(target_modules=self.targets or norm_modules(backbone))


def norm_modules(backbone: Backbone) -> list[str]:
    """Full names (within backbone.model) of the modules that hold the backbone's layernorm group: every architecture
    fpt runs, whether or not peft has a map for it."""
    norms = {id(p) for p in backbone.parameter_groups()["layernorm"]}
    return [
        name
        for name, m in backbone.model.named_modules()
        if name and any(True for _ in m.parameters(recurse=False))
        and all(id(p) in norms for p in m.parameters(recurse=False))
    ]  # fmt: skip
