"""(IA)³ through peft: trained vectors rescaling the frozen projections it targets."""

from __future__ import annotations

from typing import Any

from fpt.backbones.base import Backbone
from fpt.methods.base import PeftMethod
from fpt.registry import METHODS


@METHODS.register(
    "ia3",
    "(IA)³ (Liu et al. 2022): trained vectors that rescale frozen projections' outputs (inputs of feed-forward "
    "ones) (peft IA3Config)",
    options=("targets",),
    default_train="input,output",
)
class IA3(PeftMethod):
    name = "ia3"

    def config(self, backbone: Backbone) -> Any:
        from peft import IA3Config
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD

        feedforward = None
        if self.targets is not None:  # peft's feed-forward modules of the architecture, among the chosen targets
            known = FEEDFORWARD.get(backbone.model.config.model_type, [])
            feedforward = [t for t in self.targets if t in known]
        return IA3Config(target_modules=self.targets, feedforward_modules=feedforward)
