"""The time-series field's standard baselines, fitted rather than trained by gradient, behind the same `fpt train
--model` and written in the same result files (so sweeps and reports take them as any other model):

| model | tasks | what |
|---|---|---|
| minirocket | `ts`, `ucr:` classification and regression | aeon's MiniRocket: random convolution features + a ridge |
| dtw-1nn | `ts`, `ucr:` classification and regression | aeon's 1-nearest-neighbour under full-window DTW |
| seasonal-naive | `forecast:` | each step repeats the value one `season` earlier |
| ets | `forecast:` | exponential smoothing (statsmodels) per window on its whole history; AICc chooses the trend |
|  |  | (none or damped additive) and the seasonality (none or additive) |

They fit on the train split only (as FPT trains on it), and are scored on validation and test by the same metric
code as the training loop (fpt.evaluate.score_predictions). A record has no curve and no trained tensors.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from fpt.errors import FPTError
from fpt.registry import MODELS
from fpt.tasks import Task, TaskSpec


def padded(series: list[np.ndarray], length: int) -> np.ndarray:
    """list of (T_i, C) → (N, C, length), zero-padded at the end (MiniRocket needs equal lengths)."""
    out = np.zeros((len(series), series[0].shape[1], length))
    for i, s in enumerate(series):
        out[i, :, : len(s)] = s.T
    return out


class Fitted:
    """A classical model: `fit(task)` on the train split, then `predict(task, split)` → class indices (N,) or values
    in the data's units (N, K)."""

    kinds: tuple[str, ...] = ()  # "labelled" (ts, ucr) and/or "forecast"

    def __init__(self, spec: TaskSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed

    def check(self, task: Task, name: str) -> None:
        kind = "forecast" if task.spec.name.startswith("forecast:") else "labelled" if task.raw else None
        if kind not in self.kinds:
            fits = " and ".join({"labelled": "ts and ucr: tasks", "forecast": "forecast: tasks"}[k] for k in self.kinds)
            raise FPTError(f"model {name!r} fits {fits}, not {task.spec.name!r}")

    def fit(self, task: Task) -> None:
        raise NotImplementedError

    def predict(self, task: Task, split: str) -> np.ndarray:
        raise NotImplementedError


class Aeon(Fitted):
    """An aeon estimator on the series as read: `make(classification)` builds it."""

    kinds = ("labelled",)
    pad = False

    def make(self, classification: bool):
        raise NotImplementedError

    def inputs(self, task: Task, split: str):
        series = task.raw[split][0]
        if self.pad or len({len(s) for s in series}) == 1:
            return padded(series, self.length)
        return [s.T for s in series]  # unequal lengths: a list of (C, T_i)

    def fit(self, task: Task) -> None:
        self.length = max(len(s) for split in ("train", "val", "test") for s in task.raw[split][0])
        self.model = self.make(task.spec.objective == "classification")
        self.model.fit(self.inputs(task, "train"), task.raw["train"][1])

    def predict(self, task: Task, split: str) -> np.ndarray:
        predicted = np.asarray(self.model.predict(self.inputs(task, split)))
        return predicted if task.spec.objective == "classification" else predicted.reshape(len(predicted), -1)


class MiniRocket(Aeon):
    pad = True

    def make(self, classification: bool):
        from aeon.classification.convolution_based import MiniRocketClassifier
        from aeon.regression.convolution_based import MiniRocketRegressor

        return (MiniRocketClassifier if classification else MiniRocketRegressor)(random_state=self.seed)


class DTW1NN(Aeon):
    def make(self, classification: bool):
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
        from aeon.regression.distance_based import KNeighborsTimeSeriesRegressor

        cls = KNeighborsTimeSeriesClassifier if classification else KNeighborsTimeSeriesRegressor
        return cls(n_neighbors=1, distance="dtw")


class Forecaster(Fitted):
    kinds = ("forecast",)

    def fit(self, task: Task) -> None:
        self.horizon, self.season = task.info["horizon"], task.info["season"]

    def predict(self, task: Task, split: str) -> np.ndarray:
        return np.stack([self.forecast(history).reshape(-1) for history in task.raw[split]])  # (N, horizon · C)

    def forecast(self, history: np.ndarray) -> np.ndarray:
        """history (T, C) → (horizon, C)."""
        raise NotImplementedError


class SeasonalNaive(Forecaster):
    def forecast(self, history: np.ndarray) -> np.ndarray:
        season = self.season if len(history) >= self.season else 1
        last = history[-season:]  # (season, C)
        return last[np.arange(self.horizon) % season]


class ETS(Forecaster):
    def forecast(self, history: np.ndarray) -> np.ndarray:
        return np.stack([self.one(history[:, c]) for c in range(history.shape[1])], 1)

    def one(self, y: np.ndarray) -> np.ndarray:
        """The AICc-best of up to four exponential smoothing models of y; the naive forecast if none fits."""
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        seasonal = [None, "add"] if self.season > 1 and len(y) >= 2 * self.season + 2 else [None]
        trends = [None, "add"] if len(y) >= 6 else [None]
        best, best_aicc = None, np.inf
        for trend in trends:
            for season in seasonal:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # convergence and overflow warnings of hopeless candidates
                    try:
                        fit = ExponentialSmoothing(
                            y, trend=trend, damped_trend=trend is not None, seasonal=season,
                            seasonal_periods=self.season if season else None, initialization_method="estimated",
                        ).fit()  # fmt: skip
                    except (ValueError, np.linalg.LinAlgError):
                        continue
                aicc = fit.aicc if np.isfinite(fit.aicc) else np.inf
                if aicc < best_aicc and np.isfinite(fit.forecast(self.horizon)).all():
                    best, best_aicc = fit, aicc
        return np.full(self.horizon, y[-1]) if best is None else np.asarray(best.forecast(self.horizon))


FITTED = {"minirocket": MiniRocket, "dtw-1nn": DTW1NN, "seasonal-naive": SeasonalNaive, "ets": ETS}


def fit_and_score(model: Fitted, task: Task, name: str) -> tuple[dict[str, float], dict[str, float], float]:
    """Fit on train; (validation metrics, test metrics, seconds fitting and predicting)."""
    from fpt.evaluate import score_predictions

    model.check(task, name)
    started = time.perf_counter()
    model.fit(task)
    val, test = (score_predictions(task.splits[s], model.predict(task, s), task.spec.metric) for s in ("val", "test"))
    return val, test, time.perf_counter() - started


def register(name: str, description: str) -> None:
    def factory(cfg: Any, spec: TaskSpec) -> Fitted:
        return FITTED[name](spec, cfg.seed)

    MODELS.register(name, description, fitted=True)(factory)


register("minirocket", "time series: aeon's MiniRocket (random convolutions + ridge), fitted; ts and ucr tasks")
register("dtw-1nn", "time series: aeon's 1-nearest-neighbour under full-window DTW; ts and ucr tasks")
register("seasonal-naive", "forecasting: repeat the last season (the naive forecast for season 1)")
register("ets", "forecasting: exponential smoothing (statsmodels), trend and seasonality chosen by AICc per window")
