"""Baselines chosen with --model, one module per family; importing this package registers them in fpt.registry.MODELS.

Every baseline trains in the same loop and writes the same result files as FPT. Each implements
forward(x, mask) -> logits (B, K, C) and parameter_groups() with every parameter in exactly one of fpt.freeze.GROUPS:

| model | input | attention | feedforward | layernorm | positional | embedding | output | trains by default |
|---|---|---|---|---|---|---|---|---|
| transformer | as FPT | as FPT | as FPT | as FPT | as FPT | as FPT | as FPT | all (forced) |
| lstm | input projection / embedding | – | the LSTM's weights | – | – | – | head | all (forced) |
| linear | – | – | – | – | – | – | the one linear map | all (forced) |
| mlp | first layer | – | further hidden layers | – | – | – | last layer | all (forced) |
| random-features | – | – | the frozen random layer | – | – | – | head | output |
| dct, fourier | – | – | – (a fixed transform, no parameters) | – | – | – | head | output |
| dlinear | – | – | – | – | – | – | the seasonal and trend linear maps | all (forced) |

The classical time-series baselines (minirocket, dtw-1nn, seasonal-naive, ets: fpt.baselines.classical) are fitted,
not trained by gradient, and write the same result files.
"""

from fpt.baselines import classical, dense, dlinear, lstm, spectral, transformer  # noqa: F401
