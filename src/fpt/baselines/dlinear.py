"""`dlinear`: DLinear (Zeng et al. 2023, "Are Transformers Effective for Time Series Forecasting?"): the input split
into a trend (moving average over the tokens) and the rest, each mapped by one linear layer to the outputs, summed.
On a forecasting task with one time step a token (patch 1) it is DLinear itself; with fpt's instance normalisation
of every window it is the RevIN-normalised DLinear the field compares against.
"""

from __future__ import annotations

import torch
from torch import nn

from fpt.baselines.common import flat_size, groups, num_predictions, padded_input
from fpt.registry import MODELS
from fpt.tasks import TaskSpec

KERNEL = 25  # DLinear's moving-average window


class DLinear(nn.Module):
    """x (B, T, d) → trend (B, T, d) + remainder → two linear maps → (B, K, C)."""

    def __init__(self, spec: TaskSpec, kernel: int = KERNEL) -> None:
        super().__init__()
        self.spec = spec
        self.kernel = min(kernel, spec.max_tokens) // 2 * 2 + 1  # odd
        outputs = num_predictions(spec) * spec.num_classes
        self.seasonal = nn.Linear(flat_size(spec), outputs)
        self.trend = nn.Linear(flat_size(spec), outputs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = padded_input(x, self.spec)  # (B, T, d)
        half = self.kernel // 2
        edges = torch.cat([x[:, :1].expand(-1, half, -1), x, x[:, -1:].expand(-1, half, -1)], 1)  # replicate-padded
        trend = nn.functional.avg_pool1d(edges.transpose(1, 2), self.kernel, stride=1).transpose(1, 2)  # (B, T, d)
        out = self.seasonal((x - trend).flatten(1)) + self.trend(trend.flatten(1))
        return out.reshape(x.shape[0], -1, self.spec.num_classes)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return groups(output=nn.ModuleList([self.seasonal, self.trend]))


@MODELS.register(
    "dlinear", "DLinear: trend + remainder of the input, one linear map each (forecasting)", trains_all=True
)
def dlinear(cfg, spec: TaskSpec) -> DLinear:
    return DLinear(spec)
