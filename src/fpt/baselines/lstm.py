"""`lstm`: the paper's recurrent baseline, a stacked LSTM trained end to end (3 layers by default, `lstm_layers`).

input layer (linear for features, embedding for token ids) → LSTM (width `width`, default the backbone's hidden size)
→ readout (the last k real tokens, or the mean) → linear head, as FPT reads out. Padding follows the real tokens, so a
unidirectional LSTM's states at real tokens never see it. The paper's LSTM normalised its gates (an LN-LSTM); this is
torch's plain nn.LSTM. Groups: input layer → input, LSTM weights → feedforward, head → output.
"""

from __future__ import annotations

import torch
from torch import nn

from fpt.baselines.common import baseline_width, groups
from fpt.model import readout
from fpt.registry import MODELS
from fpt.tasks import TaskSpec


class LSTMBaseline(nn.Module):
    def __init__(self, spec: TaskSpec, width: int, layers: int, dropout: float, readout: str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.readout = readout or spec.readout
        self.num_outputs = spec.num_outputs if self.readout == "last" else 1
        if self.readout == "mean" and spec.num_outputs != 1:
            raise ValueError(f"task {spec.name!r} reads {spec.num_outputs} tokens; readout 'mean' gives one")
        if spec.input == "tokens":
            self.input_layer: nn.Module = nn.Embedding(spec.input_dim, width, padding_idx=0)
        else:
            self.input_layer = nn.Linear(spec.input_dim, width)
        self.lstm = nn.LSTM(width, width, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(width, spec.predictions_per_token * spec.num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.input_layer(x))  # (B, T, W)
        features = readout(hidden, mask, self.readout, self.num_outputs)  # (B, k, W)
        return self.head(features).reshape(x.shape[0], -1, self.spec.num_classes)  # (B, k · ppt, C)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return groups(input=self.input_layer, feedforward=self.lstm, output=self.head)


@MODELS.register(
    "lstm", "stacked LSTM trained end to end (the paper's: 3 layers; --lstm-layers, --width)", trains_all=True
)
def lstm(cfg, spec: TaskSpec) -> LSTMBaseline:
    return LSTMBaseline(spec, baseline_width(cfg), cfg.lstm_layers, cfg.dropout, cfg.readout)
