"""T5 encoders: `t5-encoder` (the encoder stack of any T5 folder or cached hub id, default t5-small).

T5 adds no position vector to the input: each attention score gets a learned bias per relative-distance bucket
(stored in the first block only and shared by the rest). The buckets are logarithmic and saturate, so any length
runs (max_positions is None). T5 does not scale or normalise the input embeddings before the first block.
"""

from __future__ import annotations

import torch
from transformers import T5EncoderModel

from fpt.backbones.base import Backbone, load_hf, params
from fpt.registry import BACKBONES

T5_DROPOUT_KEYS = ("dropout_rate",)
UNUSED = (r"decoder\.", r"lm_head\.")  # the decoder half of a full T5 checkpoint


class T5Backbone(Backbone):
    family = "t5"
    model_types = ("t5",)
    adds_to_inputs = False  # relative position biases act inside attention; the first norm sees the input alone

    def __init__(self, model: T5EncoderModel, *, name: str, source: str, init: str) -> None:
        super().__init__(
            model,
            name=name,
            source=source,
            init=init,
            hidden_size=model.config.d_model,
            max_positions=None,
            causal=False,
        )

    @staticmethod
    def body_groups(model: T5EncoderModel) -> dict[str, list[torch.nn.Parameter]]:
        attentions = [block.layer[0].SelfAttention for block in model.encoder.block]
        buckets = [att.relative_attention_bias for att in attentions if att.has_relative_attention_bias]  # block 0 only
        # encoder.embed_tokens is normally tied to `shared` (the same Parameter); list it once either way.
        embed = params(model.shared) + [p for p in params(model.encoder.embed_tokens) if p is not model.shared.weight]
        return {
            "embedding": embed,
            "positional": params(buckets),
            "layernorm": params(
                [(block.layer[0].layer_norm, block.layer[1].layer_norm) for block in model.encoder.block],
                model.encoder.final_layer_norm,
            ),
            "attention": params([(att.q, att.k, att.v, att.o) for att in attentions]),
            "feedforward": params([block.layer[1].DenseReluDense for block in model.encoder.block]),
        }

    def layers(self) -> torch.nn.ModuleList:
        return self.model.encoder.block

    def token_embeddings(self) -> torch.Tensor:
        return self.model.encoder.embed_tokens.weight


@BACKBONES.register(
    "t5-encoder", "the encoder of any T5 model from a local folder or cached hub id (--backbone-path, default t5-small)"
)
def t5_encoder(init: str = "pretrained", path: str | None = None, dropout: float = 0.1) -> T5Backbone:
    source = path or "t5-small"
    model = load_hf(T5EncoderModel, source, init, allowed_unused=UNUSED, dropout=dropout, dropout_keys=T5_DROPOUT_KEYS)
    return T5Backbone(model, name="t5-encoder", source=source, init=init)
