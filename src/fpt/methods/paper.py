"""The paper's FPT as a method: nothing added to the backbone; --train's groups (by default input, output, layer
norms and positions) are all that trains."""

from __future__ import annotations

from fpt.methods.base import Method
from fpt.registry import METHODS


@METHODS.register("fpt", "the paper's FPT: no tensors added; --train's groups train (default)")
class PaperFPT(Method):
    name = "fpt"

    def __init__(self, cfg) -> None:
        pass
