"""BitFit (Ben Zaken et al. 2022): the backbone's bias terms train, every weight matrix stays frozen. A rule, not a
module: the biases of the attention, feed-forward and norm layers move from their groups into the "adapter" group."""

from __future__ import annotations

from torch import nn

from fpt.backbones.base import Backbone
from fpt.methods.base import Method
from fpt.registry import METHODS

BODY_GROUPS = ("attention", "feedforward", "layernorm")  # BitFit's biases: those of the transformer blocks and norms


@METHODS.register(
    "bitfit",
    "BitFit (Ben Zaken et al. 2022): the biases of attention, feed-forward and norms train",
    default_train="input,output",
)
class BitFit(Method):
    name = "bitfit"

    def __init__(self, cfg) -> None:
        pass

    def parameters(self, backbone: Backbone) -> list[nn.Parameter]:
        groups = backbone.parameter_groups()
        body = {id(p) for g in BODY_GROUPS for p in groups[g]}
        biases = (m._parameters.get("bias") for m in backbone.model.modules())  # each module's own bias, if any
        return [b for b in biases if b is not None and id(b) in body]
