"""Fixed spectral features of the raw input and a trained linear head (group output; no other parameters).

The input is zero-padded to the task's longest sequence (token ids one-hot), then transformed along the token axis,
per input feature: `dct` takes the orthonormal DCT-II coefficients (a change of basis: the same functions as `linear`,
differently conditioned for the optimiser); `fourier` takes the magnitudes of the orthonormal real FFT, which discard
phase and so are invariant to circular shifts of the sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fpt.baselines.common import groups, num_predictions, padded_input, token_dim
from fpt.registry import MODELS
from fpt.tasks import TaskSpec


def dct_matrix(n: int) -> torch.Tensor:
    """(n, n) orthonormal DCT-II: row k is the k-th cosine basis vector."""
    k, t = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None]
    basis = torch.cos(math.pi * (t + 0.5) * k / n) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


class Spectral(nn.Module):
    def __init__(self, spec: TaskSpec, kind: str) -> None:
        super().__init__()
        self.spec, self.kind = spec, kind
        if kind == "dct":
            self.register_buffer("basis", dct_matrix(spec.max_tokens), persistent=False)
            coefficients = spec.max_tokens
        else:
            coefficients = spec.max_tokens // 2 + 1
        self.head = nn.Linear(coefficients * token_dim(spec), num_predictions(spec) * spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = padded_input(x, self.spec)  # (B, T, d)
        if self.kind == "dct":
            return torch.einsum("kt,btd->bkd", self.basis, x).flatten(1)  # (B, T · d)
        return torch.fft.rfft(x, dim=1, norm="ortho").abs().flatten(1)  # (B, (T/2 + 1) · d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).reshape(x.shape[0], -1, self.spec.num_classes)  # (B, K, C)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return groups(output=self.head)


@MODELS.register("dct", "fixed DCT-II coefficients of the raw input along the tokens + trained linear head")
def dct(cfg, spec: TaskSpec) -> Spectral:
    return Spectral(spec, "dct")


@MODELS.register("fourier", "fixed Fourier magnitudes of the raw input along the tokens + trained linear head")
def fourier(cfg, spec: TaskSpec) -> Spectral:
    return Spectral(spec, "fourier")
