"""Methods: which small set of the frozen backbone's weights trains besides fpt's input layer and head (--method).

One module per method, registered in fpt.registry.METHODS; importing this package registers them all.
"""

from fpt.methods import bitfit, ia3, ln_tuning, lora, paper, prompt  # noqa: F401
from fpt.methods.base import Method, check_trained
from fpt.registry import METHODS

__all__ = ["METHODS", "Method", "check_trained", "get_method"]


def get_method(cfg) -> Method:
    """The method `cfg.method` names, with its options from `cfg`."""
    return METHODS.build(cfg.method, cfg=cfg)
