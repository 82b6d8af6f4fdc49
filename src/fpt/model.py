"""FPT = input layer → frozen pretrained backbone → readout → output head.

Only the input layer, the head, the backbone's layer norms and its positional parameters train by default
(see fpt.freeze); the backbone's self-attention and feed-forward blocks stay as pretrained.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from fpt.backbones import Backbone, get_backbone
from fpt.backbones.base import gather, prepend
from fpt.freeze import parse_groups
from fpt.methods import Method, check_trained, get_method
from fpt.registry import MODELS
from fpt.tasks import TaskSpec

InputInit = Literal["paper", "matched"]


def init_input_layer(
    layer: nn.Linear | nn.Embedding, how: InputInit, target_norm: float, zero_bias: bool = True
) -> None:
    """Initialise the trained input layer.

    "paper": orthogonal weight with gain 1.41 and PyTorch's default bias, as the FPT paper's code.
    "matched": orthogonal weight scaled so that an input of unit RMS maps to a vector of the backbone's mean
    token-embedding norm, and zero bias. On BERT-family backbones, whose embedding block applies a LayerNorm to
    input + position, the paper's bias (U(-1, 1) for a 1-dim input) is far larger than the position vectors and
    the norm washes position out; matching the scale keeps it (bit-XOR on minilm: chance vs 100%).
    `zero_bias=False` (backbones that add nothing to the input before their first norm, Backbone.adds_to_inputs):
    the bias is a random vector of the token-embedding norm instead, so no input (an all-zero patch, a 0 bit) maps to
    the zero vector, whose gradient through RMSNorm-only bodies is not finite.
    """
    with torch.no_grad():
        if isinstance(layer, nn.Embedding):  # token ids: each row is one token's vector
            if how == "paper":
                nn.init.normal_(layer.weight)
            else:
                nn.init.normal_(layer.weight)
                layer.weight.mul_(target_norm / layer.weight.norm(dim=1, keepdim=True))
            return
        layer.reset_parameters()  # PyTorch's default bias: U(-1/sqrt(d), 1/sqrt(d))
        nn.init.orthogonal_(layer.weight, gain=1.41 if how == "paper" else 1.0)  # (D, d)
        if how == "matched":
            layer.weight.mul_(target_norm / math.sqrt(layer.in_features))
            if zero_bias:
                nn.init.zeros_(layer.bias)
            else:
                layer.bias.normal_().mul_(target_norm / layer.bias.norm())


def last_positions(mask: torch.Tensor, k: int) -> torch.Tensor:
    """mask (B, T) → (B, k): the positions of each sequence's last k real tokens (0 where it has fewer)."""
    index = mask.sum(1, keepdim=True) - k + torch.arange(k, device=mask.device)  # (B, k)
    return index.clamp(min=0)


def readout(hidden: torch.Tensor, mask: torch.Tensor, how: str, k: int) -> torch.Tensor:
    """hidden (B, T, D), mask (B, T) → (B, k, D): the last k real tokens of each sequence, or the masked mean."""
    if how == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).unsqueeze(1)
    return gather(hidden, last_positions(mask, k))


class FPT(nn.Module):
    """A Frozen Pretrained Transformer for one task. Which parameters train is decided by fpt.freeze; a `method`
    (fpt.methods: LoRA, (IA)³, LN tuning, BitFit, prompt tuning) adds its own tensors to the backbone, the "adapter"
    group; prompt tuning's are tokens the backbone reads before the inputs."""

    def __init__(
        self,
        backbone: Backbone,
        spec: TaskSpec,
        input_init: InputInit = "matched",
        readout: str | None = None,
        method: Method | None = None,
    ) -> None:
        super().__init__()
        d_model = backbone.hidden_size
        self.spec = spec
        self.readout = readout or spec.readout
        self.num_outputs = spec.num_outputs if self.readout == "last" else 1
        if self.readout == "mean" and spec.num_outputs != 1:
            raise ValueError(f"task {spec.name!r} reads {spec.num_outputs} tokens; readout 'mean' gives one")
        if spec.input == "tokens":
            self.input_layer: nn.Module = nn.Embedding(spec.input_dim, d_model)
        else:
            self.input_layer = nn.Linear(spec.input_dim, d_model)
        init_input_layer(self.input_layer, input_init, backbone.embedding_norm(), backbone.adds_to_inputs)
        self.backbone = backbone
        self.head = nn.Linear(d_model, spec.predictions_per_token * spec.num_classes)
        self.method = method or Method()
        self.method.adapt(backbone)  # after the input layer and head: a seed gives them equal values under any method

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) features or (B, T) token ids, mask (B, T) → read-out features (B, k, D)."""
        embeds = self.input_layer(x)  # (B, T, D)
        prefix = self.method.prefix(self.backbone)  # (N, D) virtual tokens before the inputs, or None
        inputs_mask = mask
        if prefix is not None:
            embeds, mask = prepend(prefix, embeds, mask)
        if self.readout == "last":  # the backbone computes only what reaches the read-out tokens (the inputs' last)
            return self.backbone.forward_at(embeds, mask, last_positions(mask, self.num_outputs))
        hidden = self.backbone(embeds, mask)[:, embeds.shape[1] - x.shape[1] :]  # (B, T, D): the inputs' positions
        return readout(hidden, inputs_mask, self.readout, self.num_outputs)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, k, D) → logits (B, k · predictions_per_token, num_classes)."""
        return self.head(features).reshape(features.shape[0], -1, self.spec.num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, mask))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter in exactly one group: the backbone's five, "input", "output" and "adapter" (the method's)."""
        adapter = self.method.parameters(self.backbone)
        taken = {id(p) for p in adapter}
        body = {g: [p for p in ps if id(p) not in taken] for g, ps in self.backbone.parameter_groups().items()}
        return {
            "input": list(self.input_layer.parameters()),
            "output": list(self.head.parameters()),
            **body,
            "adapter": adapter,
        }


@MODELS.register("fpt", "Frozen Pretrained Transformer: trained input layer and head around a pretrained backbone")
def fpt_model(cfg, spec: TaskSpec) -> FPT:
    backbone = get_backbone(cfg.backbone, cfg.init, cfg.backbone_path, cfg.dropout)
    backbone.use_bos(cfg.bos)
    if cfg.layers is not None:
        backbone.keep_layers(cfg.layers)
    method = get_method(cfg)
    backbone.check_length(spec.max_tokens + method.tokens)
    model = FPT(backbone, spec, cfg.input_init, cfg.readout, method)
    check_trained(model.method, backbone, parse_groups(cfg.train), model.parameter_groups())
    return model
