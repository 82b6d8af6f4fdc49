"""Dense models on the raw input, flattened and zero-padded to the task's longest sequence (token ids one-hot).

`linear`: one linear map from the flat input to the logits (group output), trained.
`mlp`: `mlp_layers` hidden layers of width `width` with GELU and dropout, trained end to end (first layer → input,
further hidden layers → feedforward, last layer → output).
`random-features`: one frozen random ReLU layer of width `width` (default: the backbone's hidden size, the width of
FPT's features) and a trained linear head: the random layer is in group feedforward, so the default `train` leaves it
frozen and trains the head (output) alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fpt.baselines.common import baseline_width, flat_size, groups, num_predictions, padded_input
from fpt.registry import MODELS
from fpt.tasks import TaskSpec


class Dense(nn.Module):
    """flat input (B, F) → hidden layers → head → logits (B, K, C)."""

    def __init__(self, spec: TaskSpec, widths: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        sizes = [flat_size(spec), *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(sizes[-1], num_predictions(spec) * spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = padded_input(x, self.spec).flatten(1)  # (B, F)
        for layer in self.hidden:
            h = self.dropout(nn.functional.gelu(layer(h)))
        return h

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).reshape(x.shape[0], -1, self.spec.num_classes)  # (B, K, C)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        first, rest = list(self.hidden[:1]), list(self.hidden[1:])
        return groups(input=nn.ModuleList(first), feedforward=nn.ModuleList(rest), output=self.head)


class RandomFeatures(Dense):
    """A frozen random ReLU layer (weights N(0, 1/F), biases N(0, 1)) and a trained linear head."""

    def __init__(self, spec: TaskSpec, width: int) -> None:
        super().__init__(spec, [width])
        layer = self.hidden[0]
        with torch.no_grad():
            layer.weight.normal_(0.0, 1.0 / math.sqrt(layer.in_features))
            layer.bias.normal_(0.0, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden[0](padded_input(x, self.spec).flatten(1)))  # (B, W)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return groups(feedforward=self.hidden, output=self.head)


@MODELS.register(
    "linear", "one linear map from the raw input (flattened, padded to max_tokens) to the logits", trains_all=True
)
def linear(cfg, spec: TaskSpec) -> Dense:
    return Dense(spec, [])


@MODELS.register(
    "mlp", "MLP on the raw flattened input, trained end to end (--mlp-layers hidden layers of --width)", trains_all=True
)
def mlp(cfg, spec: TaskSpec) -> Dense:
    return Dense(spec, [baseline_width(cfg)] * cfg.mlp_layers, cfg.dropout)


@MODELS.register("random-features", "frozen random ReLU layer of the backbone's width (--width) + trained linear head")
def random_features(cfg, spec: TaskSpec) -> RandomFeatures:
    return RandomFeatures(spec, baseline_width(cfg))
