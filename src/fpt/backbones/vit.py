"""Vision transformers: `vit` (any ViTModel folder or cached hub id, default google/vit-base-patch16-224-in21k).

ViTModel only takes pixels, so the backbone runs the body itself: input embeddings take the place of the projected
patches, get the patch position embeddings (rows 1..T; row 0 belongs to the CLS token, which FPT does not use),
then the pre-LN blocks and the final LayerNorm, as ViTModel.forward does.
"""

from __future__ import annotations

import torch
from transformers import ViTModel
from transformers.masking_utils import create_bidirectional_mask

from fpt.backbones.base import Backbone, load_hf, params
from fpt.registry import BACKBONES

VIT_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")
UNUSED = (r"pooler\.", r"classifier\.")  # image-level heads of ViTModel / ViTForImageClassification checkpoints


class ViTBackbone(Backbone):
    family = "vit"
    model_types = ("vit",)

    def __init__(self, model: ViTModel, *, name: str, source: str, init: str) -> None:
        num_patches = model.embeddings.position_embeddings.shape[1] - 1  # the table also has the CLS slot
        super().__init__(
            model,
            name=name,
            source=source,
            init=init,
            hidden_size=model.config.hidden_size,
            max_positions=num_patches,
            causal=False,
        )

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = embeds.shape[1]
        self.check_length(length)
        emb = self.model.embeddings
        x = emb.dropout(embeds + emb.position_embeddings[:, 1 : length + 1])  # (B, T, D)
        attention_mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=x, attention_mask=mask)
        for layer in self.model.layers:
            x = layer(x, attention_mask)
        return self.model.layernorm(x)

    @staticmethod
    def body_groups(model: ViTModel) -> dict[str, list[torch.nn.Parameter]]:
        emb = model.embeddings
        return {
            "embedding": params(emb.cls_token, emb.patch_embeddings, [p for p in [emb.mask_token] if p is not None]),
            "positional": params(emb.position_embeddings),
            "layernorm": params([(lay.layernorm_before, lay.layernorm_after) for lay in model.layers], model.layernorm),
            "attention": params([lay.attention for lay in model.layers]),
            "feedforward": params([lay.mlp for lay in model.layers]),
        }

    def layers(self) -> torch.nn.ModuleList:
        return self.model.layers

    def token_embeddings(self) -> torch.Tensor:
        # ViT has no vocabulary: its tokens are projected patches. Without images, take the projection of 256 fixed
        # random patches of unit-variance pixels (ViT normalises pixels to roughly zero mean, unit scale); the rows of
        # the projection weight alone would be single-pixel responses, about sqrt(C*p*p) times too small.
        proj = self.model.embeddings.patch_embeddings.projection
        pixels = torch.randn(256, proj.in_channels, *proj.kernel_size, generator=torch.Generator().manual_seed(0))
        return proj(pixels.to(proj.weight)).flatten(1)  # (256, D)


@BACKBONES.register(
    "vit",
    "any ViT encoder from a local folder or cached hub id (--backbone-path, default google/vit-base-patch16-224-in21k)",
)
def vit(init: str = "pretrained", path: str | None = None, dropout: float = 0.1) -> ViTBackbone:
    source = path or "google/vit-base-patch16-224-in21k"
    model = load_hf(
        ViTModel,
        source,
        init,
        allowed_unused=UNUSED,
        dropout=dropout,
        dropout_keys=VIT_DROPOUT_KEYS,
        add_pooling_layer=False,
    )
    return ViTBackbone(model, name="vit", source=source, init=init)
