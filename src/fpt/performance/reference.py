"""`fpt bench`'s reference: the FPT a user would write with transformers, for the backbone families it covers."""

from __future__ import annotations

import torch
from torch import nn

from fpt.backbones.base import Backbone, loading_bars
from fpt.errors import FPTError
from fpt.tasks import TaskSpec

FAMILIES = ("bert", "llama")  # whose trained parameters the reference finds by name (TRAINED_NAMES)
TRAINED_NAMES = ("norm", "position_embeddings")  # BERT's LayerNorm and position table, Llama's RMSNorms


class Reference(nn.Module):
    """The straightforward FPT a user would write with transformers: AutoModel from the backbone's folder (its
    default attention, SDPA, or `attention`), frozen by parameter name (all but the norms and position embeddings),
    a linear input layer, the backbone's BOS token first where fpt puts it there, the last k hidden states, a linear
    head."""

    def __init__(self, backbone: Backbone, spec: TaskSpec, dropout: float, attention: str = "sdpa") -> None:
        super().__init__()
        from transformers import AutoModel

        if backbone.family not in FAMILIES:
            raise FPTError(
                f"the reference rows are written for the {' and '.join(FAMILIES)} families (backbone "
                f"{backbone.name!r} is {backbone.family}); drop them with --rows"
            )
        dropouts = dict.fromkeys(backbone.dropout_keys, dropout)
        with loading_bars(False):  # a bar per weight load would interleave with the bench's table
            self.body = AutoModel.from_pretrained(
                backbone.folder, attn_implementation=attention, local_files_only=True, use_cache=False, **dropouts
            )
        for name, p in self.body.named_parameters():
            p.requires_grad = any(k in name.lower() for k in TRAINED_NAMES)
        width = self.body.config.hidden_size
        self.input_layer = nn.Linear(spec.input_dim, width)
        self.head = nn.Linear(width, spec.predictions_per_token * spec.num_classes)
        self.k, self.classes = spec.num_outputs, spec.num_classes
        self.bos = backbone.bos_token if backbone.prepend_bos else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embeds = self.input_layer(x)  # (B, T, D)
        if self.bos is not None:
            start = self.body.get_input_embeddings().weight[self.bos].expand(x.shape[0], 1, -1)  # (B, 1, D)
            embeds = torch.cat([start, embeds], 1)
        hidden = self.body(inputs_embeds=embeds).last_hidden_state[:, -self.k :]  # (B, k, D)
        return self.head(hidden).reshape(x.shape[0], -1, self.classes)
