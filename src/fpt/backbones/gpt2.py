"""GPT-2 decoders: `gpt2` (any GPT2Model folder or cached hub id: gpt2, gpt2-medium, gpt2-large, ...).

The backbone the FPT paper uses. Causal attention, a learned position table of n_positions rows added to the input,
and no normalisation before the first block (GPT-2 is pre-LN), so the input layer's scale reaches layer 0 unchanged.
"""

from __future__ import annotations

import torch
from transformers import GPT2Model

from fpt.backbones.base import Backbone, load_hf, params
from fpt.registry import BACKBONES

GPT2_DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop")
# Checkpoints saved from GPT2LMHeadModel carry the LM head; those saved by old transformers versions also carry each
# layer's causal-mask buffer `attn.masked_bias` (transformers itself skips `attn.bias`), under the checkpoint's prefix.
UNUSED = (r"lm_head\.", r"(transformer\.)?h\.\d+\.attn\.masked_bias$")


class GPT2Backbone(Backbone):
    family = "gpt2"
    model_types = ("gpt2",)

    def __init__(self, model: GPT2Model, *, name: str, source: str, init: str) -> None:
        c = model.config
        c.use_cache = False  # FPT runs whole sequences: no key/value cache to build on every forward
        super().__init__(
            model,
            name=name,
            source=source,
            init=init,
            hidden_size=c.hidden_size,
            max_positions=c.n_positions,
            causal=True,
        )

    @staticmethod
    def body_groups(model: GPT2Model) -> dict[str, list[torch.nn.Parameter]]:
        return {
            "embedding": params(model.wte),
            "positional": params(model.wpe),
            "layernorm": params([(block.ln_1, block.ln_2) for block in model.h], model.ln_f),
            "attention": params([block.attn for block in model.h]),
            "feedforward": params([block.mlp for block in model.h]),
        }

    def layers(self) -> torch.nn.ModuleList:
        return self.model.h

    def token_embeddings(self) -> torch.Tensor:
        return self.model.wte.weight


@BACKBONES.register("gpt2", "any GPT-2 decoder from a local folder or cached hub id (--backbone-path, default gpt2)")
def gpt2(init: str = "pretrained", path: str | None = None, dropout: float = 0.1) -> GPT2Backbone:
    source = path or "gpt2"
    model = load_hf(GPT2Model, source, init, allowed_unused=UNUSED, dropout=dropout, dropout_keys=GPT2_DROPOUT_KEYS)
    return GPT2Backbone(model, name="gpt2", source=source, init=init)
