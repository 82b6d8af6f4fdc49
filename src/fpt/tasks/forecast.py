"""`forecast:<Name>`: forecast the next `horizon` steps of a series from its last `lookback` steps.

<Name> is a forecasting set aeon ships (Airline, Lynx, ShampooSales, Uschange, solar, PBS, m1_yearly) or a path to
the user's file: .csv (numeric columns are the channels of one series, in time order; other columns such as dates
are skipped), .npz (array `series`, (T,) or (T, C)), or .tsf (Monash format: many series, aeon's reader).

Every series is split in time: its last `test_size` points are the test region, the `val_size` before them the
validation region, the rest training. An example is a window whose horizon lies inside one region (its lookback may
reach back into earlier ones, as a forecaster would see them). Windows are normalised by their lookback's own mean
and std per channel (`normalise: instance`, the RevIN-style default of time-series transformers; the forecast is
mapped back before any metric), and the metrics are MSE, MAE and MASE (MAE over the in-sample MAE of the seasonal
naive forecast on the series' training region), the last choosing the best step.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import RegressionSplit, Task, TaskSpec, check_positive
from fpt.tasks.series import Recipe, check_file, global_stats, instance_stats, is_number, parse_values
from fpt.tasks.ucr import aeon_data_dir


@dataclass(frozen=True)
class Shipped:
    """A forecasting set shipped with aeon: its file, the columns forecast, and its usual horizon and season."""

    file: str
    columns: tuple[str, ...] | None  # None: every numeric column (or a .tsf file's series)
    horizon: int
    season: int
    lookback: int


SHIPPED = {
    "Airline": Shipped("Airline/Airline.csv", ("Passengers",), 12, 12, 24),  # monthly, 1949-1960
    "Lynx": Shipped("Lynx/Lynx.csv", ("0",), 10, 1, 20),  # yearly trappings, 1821-1934 (a ~10-year cycle)
    "ShampooSales": Shipped("ShampooSales/ShampooSales.csv", ("Sales",), 6, 1, 6),  # monthly, 3 years
    "Uschange": Shipped("Uschange/Uschange.csv", None, 8, 4, 16),  # quarterly, 5 channels
    "solar": Shipped("solar/solar.csv", ("solar_gen",), 12, 48, 48),  # half-hourly, 6 days
    "PBS": Shipped("PBS_dataset/PBS_dataset.csv", ("Scripts",), 12, 12, 24),  # monthly prescriptions
    "m1_yearly": Shipped("m1_yearly_dataset/m1_yearly_dataset.tsf", None, 6, 1, 6),  # 181 yearly series (M1)
}


def read_series_csv(path: Path, columns: tuple[str, ...] | None) -> list[np.ndarray]:
    """One series (T, C) from a csv: the named columns, or every column whose first value is a number."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = [(n, row) for n, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]
    if len(rows) < 2:
        raise FPTError(f"{path}: empty file (a header row and one row a time step)")
    header = [c.strip() for c in rows[0][1]]
    if columns is None:
        picked = [i for i, c in enumerate(rows[1][1]) if i < len(header) and header[i] and is_number(c)]
    else:
        unknown = [c for c in columns if c not in header]
        if unknown:
            raise FPTError(f"{path}: no column {unknown[0]!r}; the header has {', '.join(header)}")
        picked = [header.index(c) for c in columns]
    if not picked:
        raise FPTError(f"{path}: no numeric column to forecast")
    values = []
    for number, row in rows[1:]:
        if len(row) != len(header):
            raise FPTError(f"{path}:{number}: {len(row)} fields, but the header has {len(header)} (ragged row)")
        values.append(parse_values([row[i].strip() for i in picked], path, number))
    return [np.stack(values)]


def read_series_npz(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "series" not in data.files:
                raise FPTError(f"{path}: no array 'series' ((T,) or (T, C)); has {', '.join(data.files) or 'none'}")
            x = data["series"]
    except FPTError:
        raise
    except Exception as e:
        raise FPTError(f"{path}: not a readable .npz of numeric arrays: {e}") from None
    if x.ndim not in (1, 2) or x.dtype.kind not in "iuf" or len(x) == 0:
        raise FPTError(f"{path}: series must be numbers shaped (T,) or (T, C), got {x.dtype} {x.shape}")
    x = x.astype(np.float64).reshape(len(x), -1)
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise FPTError(f"{path}: series[{int(np.argmax(bad))}] holds NaN or inf; fill it")
    return [x]


def read_series_tsf(path: Path) -> tuple[list[np.ndarray], int | None]:
    """The series of a Monash .tsf file (aeon's reader) and the horizon its header declares."""
    from aeon.datasets import load_from_tsf_file

    try:
        frame, meta = load_from_tsf_file(str(path))
    except Exception as e:
        raise FPTError(f"{path}: not a readable .tsf file: {e}") from None
    series = [np.asarray(v, dtype=np.float64).reshape(-1, 1) for v in frame["series_value"]]
    for i, s in enumerate(series):
        if not np.isfinite(s).all():
            raise FPTError(f"{path}: series {i + 1} holds missing values; fill them")
    return series, meta.get("forecast_horizon")


def read_forecast_source(name: str) -> tuple[str, list[np.ndarray], Shipped | None]:
    """(display name, series, shipped defaults) for a shipped set's name or a file path."""
    by_lower = {n.lower(): n for n in SHIPPED}
    if name.lower() in by_lower:
        name = by_lower[name.lower()]
        shipped = SHIPPED[name]
        path = aeon_data_dir() / shipped.file
        series = read_series_tsf(path)[0] if path.suffix == ".tsf" else read_series_csv(path, shipped.columns)
        return name, series, shipped
    suffix = Path(name).suffix.lower()
    if suffix not in (".csv", ".npz", ".tsf"):
        raise FPTError(
            f"forecast:{name}: not a shipped set ({', '.join(SHIPPED)}) nor a .csv, .npz or .tsf file to read"
        )
    path = check_file(name, f"{suffix} file")
    if suffix == ".csv":
        return path.stem, read_series_csv(path, None), None
    if suffix == ".npz":
        return path.stem, read_series_npz(path), None
    series, horizon = read_series_tsf(path)
    return path.stem, series, Shipped(str(path), None, horizon or 0, 1, 0) if horizon else None


def mase_scale(train: np.ndarray, season: int) -> np.ndarray:
    """Per channel: the mean absolute error of the seasonal naive forecast x[t - season] over the training region
    (NaN where it is zero or the region is too short)."""
    if len(train) <= season:
        return np.full(train.shape[1], np.nan)
    scale = np.abs(train[season:] - train[:-season]).mean(0)
    return np.where(scale > 0, scale, np.nan)


def windows(start: int, end: int, lookback: int, horizon: int) -> list[int]:
    """Ends e of the windows whose horizon x[e - horizon:e] lies in [start, end) and whose lookback is whole."""
    return [e for e in range(max(start + horizon, lookback + horizon), end + 1)]


def add_windows(
    parts: dict[str, list], x: np.ndarray, n_test: int, n_val: int, lookback: int, horizon: int, season: int,
    recipe: Recipe,
) -> bool:  # fmt: skip
    """Append series x's windows to `parts` (split → [tokens, targets, offsets, scales, MASE scales, histories]);
    False when not even a test window fits it (the series is skipped). A short series may give test windows and no
    training ones: its lookbacks reach back into the regions before."""
    end_train = max(0, len(x) - n_test - n_val)
    regions = {
        "train": (0, end_train),
        "val": (end_train, max(0, len(x) - n_test)),
        "test": (max(0, len(x) - n_test), len(x)),
    }
    train_part = x[: max(end_train, season + 1)]  # the MASE scale's in-sample region (at least one seasonal step)
    if len(x) < lookback + horizon:
        return False
    scale_mase = mase_scale(train_part, season)
    fixed = {"global": global_stats([train_part]), "none": (np.zeros(x.shape[1]), np.ones(x.shape[1]))}
    for split, (start, end) in regions.items():
        for e in windows(start, end, lookback, horizon):
            past, future = x[e - horizon - lookback : e - horizon], x[e - horizon : e]
            mean, std = instance_stats(past) if recipe.normalise == "instance" else fixed[recipe.normalise]
            row = parts[split]
            row[0].append(torch.from_numpy(recipe.tokens((past - mean) / std)))
            row[1].append(future.reshape(-1))  # (horizon · C,) time-major
            row[2].append(np.tile(mean, horizon))
            row[3].append(np.tile(std, horizon))
            row[4].append(np.tile(scale_mase, horizon))
            row[5].append(x[: e - horizon])  # everything before the horizon: what a classical forecaster fits
    return True


@TASKS.register("forecast", "time series: forecast a shipped series (Airline, ...) or your own file's", prefix=True)
def forecast(
    name: str,
    horizon: int | None = None,
    lookback: int | None = None,
    season: int | None = None,
    test_size: int | None = None,
    val_size: int | None = None,
    patch: int = 1,
    stride: int | None = None,
    normalise: str = "instance",
    channels: str = "mixed",
) -> Task:
    """`forecast:Airline`, `forecast:data/sales.csv`: windows of `lookback` steps → the next `horizon` steps.

    Defaults: a shipped set's usual horizon, season and lookback (a .tsf file's declared horizon, a lookback of two);
    test and validation regions of 20% of each series each (at least one horizon), or one horizon each for
    collections of 10 or more series (as the M competitions hold out). `normalise`: instance (each window by its
    lookback), global (each series by its training region) or none; `patch`, `stride`, `channels` as the `ts` task.
    """
    label, series, shipped = read_forecast_source(name)
    horizon = horizon or (shipped.horizon if shipped else None)
    if horizon is None:
        raise FPTError(f"forecast:{name}: give the horizon (--task-args '{{horizon: 12}}')")
    lookback = lookback or (shipped.lookback if shipped and shipped.lookback else 2 * horizon)
    season = season or (shipped.season if shipped else 1)
    check_positive(horizon=horizon, lookback=lookback, season=season)
    recipe = Recipe(normalise, patch, stride, channels)  # type: ignore[arg-type]
    many = len(series) >= 10
    parts: dict[str, list] = {s: [[], [], [], [], [], []] for s in ("train", "val", "test")}  # + history
    skipped = 0
    for x in series:
        n_test = test_size or (horizon if many else max(horizon, round(0.2 * len(x))))
        skipped += not add_windows(parts, x, n_test, val_size or n_test, lookback, horizon, season, recipe)
    empty = [s for s, rows in parts.items() if not rows[0]]
    if empty:
        raise FPTError(
            f"forecast:{name}: no {empty[0]} windows of lookback {lookback} + horizon {horizon} fit the series "
            f"(longest {max(len(x) for x in series)} steps); lower the lookback or horizon"
        )
    splits = {s: RegressionSplit(torch.stack(r[0]), np.stack(r[1]), np.stack(r[2]), np.stack(r[3]), np.stack(r[4]))
              for s, r in parts.items()}  # fmt: skip
    n_channels = series[0].shape[1]
    spec = TaskSpec(
        f"forecast:{label}",
        "time series",
        "features",
        input_dim=recipe.input_dim(n_channels),
        num_classes=1,
        max_tokens=recipe.token_count(lookback, n_channels),
        predictions_per_token=horizon * n_channels,
        readout="last",
        default_steps=1000,
        default_eval_every=50,
        objective="regression",
        metric="mase",
    )
    info = {
        "series": len(series),
        "series_skipped": skipped,
        "channels": n_channels,
        "horizon": horizon,
        "lookback": lookback,
        "season": season,
        "patch": recipe.patch,
        "stride": recipe.step,
        "normalise": normalise,
        "channel_tokens": channels,
    }
    return Task(spec, splits, info, raw={s: r[5] for s, r in parts.items()})
