"""What a method is: a rule for which small set of the frozen backbone's weights trains besides fpt's input layer
and head, and the checks every method shares.

A method adds tensors to the backbone (LoRA's low-rank matrices, (IA)³'s scaling vectors, LN tuning's copies of the
norms) or takes some out of its groups (BitFit's biases). Those tensors are the "adapter" group of fpt.freeze, so the
one rule that decides what trains also counts, checkpoints and exports them; `--train` adds whole groups beside it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from fpt.backbones.base import Backbone
from fpt.errors import FPTError

ADAPTER_NAME = "default"  # peft's name for the one adapter fpt injects


class Method:
    """A method: `adapt` changes the backbone in place (once, after the input layer and head are built, so a seed gives
    them the same initial values under every method), `parameters` finds its tensors again from the backbone's
    structure, and `updates` gives the weight changes it makes to frozen matrices (LoRA: B·A·scale), for fpt.moved."""

    name = ""
    tokens = 0  # virtual tokens the method puts before the inputs (prompt tuning): positions they take

    def adapt(self, backbone: Backbone) -> None:
        """Add the method's tensors to `backbone` (in place)."""

    def parameters(self, backbone: Backbone) -> list[nn.Parameter]:
        """The method's tensors in `backbone`, in module order: fpt.freeze's "adapter" group."""
        return []

    def adapted(self, backbone: Backbone) -> list[nn.Parameter]:
        """The backbone's own parameters the method works on (the weights LoRA wraps, the norms LN tuning copies):
        training their groups as well would train the same thing twice."""
        return []

    def updates(self, backbone: Backbone) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Module name → (the change the method makes to its frozen weight, that weight), for methods that change
        a frozen matrix by something other than a tensor of their own (LoRA); empty for the others."""
        return {}

    def prefix(self, backbone: Backbone) -> torch.Tensor | None:
        """(tokens, D) trained vectors the backbone reads before the inputs (prompt tuning), or None."""
        return None


def target_list(targets: str | None) -> list[str] | None:
    return None if targets is None else [t.strip() for t in targets.split(",") if t.strip()]


class PeftMethod(Method):
    """A method peft implements: `config` builds its peft config for a backbone; the rest is shared."""

    def __init__(self, cfg) -> None:
        self.targets = target_list(cfg.targets)  # None: peft's (or the method's) default modules

    def config(self, backbone: Backbone) -> Any:
        raise NotImplementedError

    def adapt(self, backbone: Backbone) -> None:
        from peft import inject_adapter_in_model

        try:
            with warnings.catch_warnings():  # peft's notes on norms (no in/out features) and GPT-2's Conv1D layout
                warnings.filterwarnings("ignore", "Unsupported layer type", UserWarning)
                warnings.filterwarnings("ignore", "fan_in_fan_out is set to False", UserWarning)
                inject_adapter_in_model(self.config(backbone), backbone.model, adapter_name=ADAPTER_NAME)
        except ValueError as err:  # no target found, no default targets for the architecture, ...
            message = " ".join(str(err).split())
            raise FPTError(f"method {self.name!r} on backbone {backbone.name!r}: {message[:300]}") from None

    def parameters(self, backbone: Backbone) -> list[nn.Parameter]:
        return [
            p
            for _, layer in tuner_layers(backbone)
            for attr in layer.adapter_layer_names
            for p in getattr(layer, attr).parameters()
        ]

    def adapted(self, backbone: Backbone) -> list[nn.Parameter]:
        return [p for _, layer in tuner_layers(backbone) for p in layer.get_base_layer().parameters()]


def tuner_layers(backbone: Backbone) -> list[tuple[str, nn.Module]]:
    """The peft layers injected into `backbone` (name within backbone.model, module), in module order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in backbone.model.named_modules() if isinstance(m, BaseTunerLayer)]


def check_trained(method: Method, backbone: Backbone, groups: Iterable[str], parameter_groups: dict) -> None:
    """Refuse, in one line, a method with no tensors of its own, or one combined with a group it already adapts (LoRA
    on the attention projections with --train attention)."""
    if method.name != "fpt" and not method.parameters(backbone):
        raise FPTError(f"method {method.name!r} finds nothing to train in backbone {backbone.name!r}")
    adapted = {id(p) for p in method.adapted(backbone)}
    clash = [g for g in groups if any(id(p) in adapted for p in parameter_groups.get(g, ()))]
    if clash:
        raise FPTError(
            f"method {method.name!r} already adapts the {' and '.join(clash)} group of backbone {backbone.name!r}; "
            f"leave {', '.join(clash)} out of train (and unfreeze), or choose other targets"
        )
