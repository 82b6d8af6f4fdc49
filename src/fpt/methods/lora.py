"""LoRA through peft: a trained low-rank update beside the frozen projections it targets."""

from __future__ import annotations

from typing import Any

import torch

from fpt.backbones.base import Backbone
from fpt.methods.base import ADAPTER_NAME, PeftMethod, tuner_layers
from fpt.registry import METHODS


@METHODS.register(
    "lora",
    "LoRA (Hu et al. 2021): a trained low-rank update B·A·alpha/rank beside frozen projections (peft LoraConfig)",
    options=("lora_rank", "lora_alpha", "lora_dropout", "targets"),
    default_train="input,output",
)
class LoRA(PeftMethod):
    name = "lora"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.rank, self.alpha, self.dropout = cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout

    def config(self, backbone: Backbone) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.targets)

    def updates(self, backbone: Backbone) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        with torch.no_grad():
            return {
                name: (layer.get_delta_weight(ADAPTER_NAME), layer.get_base_layer().weight)
                for name, layer in tuner_layers(backbone)
            }
