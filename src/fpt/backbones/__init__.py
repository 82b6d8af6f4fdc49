"""Backbone families, one module each; importing this package registers them all."""

from fpt.backbones import bert, gpt2, llama, t5, vit  # noqa: F401
from fpt.backbones.base import Backbone
from fpt.freeze import BACKBONE_GROUPS
from fpt.registry import BACKBONES

__all__ = ["BACKBONES", "BACKBONE_GROUPS", "Backbone", "get_backbone"]


def get_backbone(
    name: str = "minilm", init: str = "pretrained", path: str | None = None, dropout: float = 0.1
) -> Backbone:
    """Build a registered backbone: `init` is "pretrained" (real weights, strictly loaded) or "random"."""
    return BACKBONES.build(name, init=init, path=path, dropout=dropout)
