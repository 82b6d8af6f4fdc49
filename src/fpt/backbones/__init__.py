"""Backbone families, one module each; importing this package registers them all."""

from fpt.backbones import bert, gpt2, llama, t5, vit  # noqa: F401
from fpt.backbones.base import Backbone
from fpt.errors import FPTError
from fpt.freeze import BACKBONE_GROUPS
from fpt.registry import BACKBONES

__all__ = ["BACKBONES", "BACKBONE_GROUPS", "Backbone", "family_of", "get_backbone"]


def get_backbone(
    name: str = "minilm", init: str = "pretrained", path: str | None = None, dropout: float = 0.1
) -> Backbone:
    """Build a registered backbone: `init` is "pretrained" (real weights, strictly loaded) or "random"."""
    return BACKBONES.build(name, init=init, path=path, dropout=dropout)


def family_of(model_type: str) -> type[Backbone]:
    """The backbone family whose module structure transformers models of `model_type` ("bert", "gpt2", ...) have."""
    families = {t: cls for cls in Backbone.__subclasses__() for t in cls.model_types}
    if model_type not in families:
        raise FPTError(
            f"fpt knows no backbone family for transformers model type {model_type!r}; known: {', '.join(families)}"
        )
    return families[model_type]
