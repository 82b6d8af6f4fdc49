"""Time series in the user's files (.ts, .csv, .npz, .tsf) and the recipe that turns a series into tokens.

Readers return `Labelled` (classification or regression: one label or target a series) or a list of long series
(forecasting). A malformed file is one FPTError line naming the file, the line (or array) and the problem; nothing
is guessed: a missing label, a ragged row, a NaN, a channel count that changes, an empty file.

The recipe (`Recipe`) is what time-series transformers do before their first layer: normalise (each series by its
own per-channel mean and std, or every series by the training split's), cut into patches of `patch` steps every
`stride` steps, and make a token of one patch of every channel ("mixed") or of one channel ("independent", the
channel-independent tokens of PatchTST and GPT4TS, channel by channel).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fpt.errors import FPTError

Objective = Literal["classification", "regression"]
FORMATS = (".ts", ".csv", ".npz")


@dataclass
class Labelled:
    """Series with one label (classification) or one target value (regression) each."""

    series: list[np.ndarray]  # (T_i, C) float64
    labels: np.ndarray  # (N,) str for classification, float64 for regression
    objective: Objective
    classes: tuple[str, ...] = ()  # declared class labels (a .ts header), if any


def _number(text: str) -> float:
    value = float(text)  # ValueError for anything but a number
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def check_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FPTError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise FPTError(f"{path}: empty file")
    return path


# ---- .ts (UCR/UEA) ---------------------------------------------------------------------------------------------


def _ts_header(path: Path, lines: list[str]) -> tuple[Objective, tuple[str, ...], int]:
    """The header's objective (from @classLabel true / @targetLabel true), declared classes, and the @data line."""
    objective: Objective | None = None
    classes: tuple[str, ...] = ()
    for number, line in enumerate(lines, 1):
        words = line.strip().split()
        key = words[0].lower() if words else ""
        if key == "@classlabel" and len(words) > 1 and words[1].lower() == "true":
            objective, classes = "classification", tuple(words[2:])
        elif key == "@targetlabel" and len(words) > 1 and words[1].lower() == "true":
            objective = "regression"
        elif key == "@data":
            if objective is None:
                raise FPTError(f"{path}: the header declares no labels (@classLabel true ... or @targetLabel true)")
            return objective, classes, number
    raise FPTError(f"{path}: no @data line (not a .ts file?)")


def check_ts(path: Path) -> Objective:
    """Check every data line of a .ts file before aeon reads it, so that a problem names its line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    objective, classes, data_line = _ts_header(path, lines)
    channels = None
    rows = 0
    for number, line in enumerate(lines[data_line:], data_line + 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rows += 1
        *dims, label = line.strip().split(":")
        if not dims or not label.strip():
            raise FPTError(f"{path}:{number}: missing label (each line: values[:values...]:label)")
        if channels is None:
            channels = len(dims)
        elif len(dims) != channels:
            raise FPTError(f"{path}:{number}: {len(dims)} channels, but the first series has {channels}")
        for dim in dims:
            for value in dim.split(","):
                if value.strip() in ("?", "NaN", "nan", ""):
                    raise FPTError(f"{path}:{number}: missing value ({value.strip() or 'empty'}); fill it or drop it")
                try:
                    _number(value)
                except ValueError:
                    raise FPTError(f"{path}:{number}: {value.strip()!r} is not a finite number") from None
        if objective == "classification" and classes and label.strip().lower() not in {c.lower() for c in classes}:
            raise FPTError(f"{path}:{number}: label {label.strip()!r} is not among the header's {', '.join(classes)}")
        if objective == "regression":
            try:
                _number(label)
            except ValueError:
                raise FPTError(f"{path}:{number}: target {label.strip()!r} is not a finite number") from None
    if not rows:
        raise FPTError(f"{path}: no series after @data")
    return objective


def read_ts(path: str | Path, missing: Literal["error", "zero"] = "error") -> Labelled:
    """A UCR/UEA .ts file (aeon's reader), checked line by line first unless `missing="zero"` (the archives' own
    files, whose missing values become 0 after standardisation)."""
    from aeon.datasets import load_from_ts_file

    path = check_file(path, ".ts file")
    if missing == "error":
        objective = check_ts(path)
    else:
        objective = _ts_header(path, path.read_text(encoding="utf-8").splitlines())[0]
    try:
        x, y, meta = load_from_ts_file(str(path), return_meta_data=True)
        classes = tuple(str(c) for c in meta.get("class_values") or ())  # as aeon spells them (it may lower-case)
    except Exception as e:  # aeon's own messages name no line: check_ts has caught what it can
        raise FPTError(f"{path}: not a readable .ts file: {e}") from None
    series = [np.asarray(s, dtype=np.float64).T for s in x]
    labels = np.asarray(y, dtype=np.float64) if objective == "regression" else np.asarray([str(v) for v in y])
    return Labelled(series, labels, objective, classes)


# ---- .csv ------------------------------------------------------------------------------------------------------


def _column(header: list[str] | None, label: int | str, width: int, path: Path) -> int:
    if isinstance(label, int):
        if not -width <= label < width:
            raise FPTError(f"{path}: label column {label} does not exist (rows have {width} fields)")
        return label % width
    if header is None or label not in header:
        named = f"the header's {', '.join(header)}" if header else "no header row"
        raise FPTError(f"{path}: no column {label!r} for the labels ({named})")
    return header.index(label)


def read_csv(path: str | Path, label: int | str = 0, objective: Objective | None = None) -> Labelled:
    """One series a row (univariate), the label or target in column `label` (an index or a header name; the first
    column by default, as the UCR archive's .csv/.tsv files). A header row is recognised by a non-number in a value
    column. Shorter series leave trailing fields empty; a row with a different number of fields is an error."""
    path = check_file(path, "csv file")
    with path.open(newline="", encoding="utf-8") as f:
        sample = f.read(4096)
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        f.seek(0)
        rows = [(n, row) for n, row in enumerate(csv.reader(f, delimiter=delimiter), 1) if any(c.strip() for c in row)]
    if not rows:
        raise FPTError(f"{path}: empty file")
    width = len(rows[0][1])
    header = None
    probe = _column(None, label, width, path) if isinstance(label, int) else None
    if isinstance(label, str) or any(not is_number(c) for i, c in enumerate(rows[0][1]) if i != probe and c.strip()):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise FPTError(f"{path}: a header and no series")
    column = _column(header, label, width, path)
    series, labels = [], []
    for number, row in rows:
        if len(row) != width:
            raise FPTError(f"{path}:{number}: {len(row)} fields, but the first row has {width} (ragged row)")
        target = row[column].strip()
        if not target:
            raise FPTError(f"{path}:{number}: missing label in column {header[column] if header else column}")
        values = [c.strip() for i, c in enumerate(row) if i != column]
        while values and not values[-1]:
            values.pop()  # a shorter series
        if not values:
            raise FPTError(f"{path}:{number}: no values, only a label")
        series.append(parse_values(values, path, number)[:, None])
        labels.append(target)
    return _labelled(series, labels, objective, path)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_values(values: list[str], path: Path, line: int | str) -> np.ndarray:
    out = np.empty(len(values))
    for i, value in enumerate(values):
        if not value or value.lower() in ("nan", "?", "na"):
            raise FPTError(f"{path}:{line}: missing value at position {i + 1}; fill it or drop the series")
        try:
            out[i] = _number(value)
        except ValueError:
            raise FPTError(f"{path}:{line}: {value!r} at position {i + 1} is not a finite number") from None
    return out


def _labelled(series: list[np.ndarray], labels: list, objective: Objective | None, path: Path) -> Labelled:
    """Labels as classes (strings) or regression targets: `objective` if given, else regression only when every label
    is a number and some are not whole numbers."""
    texts = [str(v) for v in labels]
    numeric = all(is_number(t) for t in texts)
    if objective is None:
        objective = "regression" if numeric and any(float(t) != round(float(t)) for t in texts) else "classification"
    if objective == "regression":
        if not numeric:
            bad = next(t for t in texts if not is_number(t))
            raise FPTError(f"{path}: regression target {bad!r} is not a number")
        targets = np.array([float(t) for t in texts])
        if not np.isfinite(targets).all():
            row = int(np.argmin(np.isfinite(targets)))
            raise FPTError(f"{path}: a regression target is NaN or infinite (series {row + 1})")
        return Labelled(series, targets, "regression")
    texts = [str(int(float(t))) if numeric and float(t) == round(float(t)) else t for t in texts]  # 1.0 and 1 agree
    return Labelled(series, np.asarray(texts), "classification")


# ---- .npz ------------------------------------------------------------------------------------------------------


def read_npz(path: str | Path, objective: Objective | None = None) -> Labelled:
    """Arrays `X` (N, T) univariate or (N, C, T) as aeon and the UCR archive store them, and `y` (N,)."""
    path = check_file(path, "npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # a cut zip, an object array (pickle refused), not an npz at all
        raise FPTError(f"{path}: not a readable .npz of numeric arrays: {e}") from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise FPTError(f"{path}: no array {missing[0]!r} (an .npz needs X (N, T) or (N, C, T) and y (N,); has "
                       f"{', '.join(arrays) or 'none'})")  # fmt: skip
    x, y = arrays["X"], arrays["y"]
    if x.ndim not in (2, 3) or x.dtype.kind not in "iuf":
        raise FPTError(f"{path}: X must be numbers shaped (N, T) or (N, C, T), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise FPTError(f"{path}: y must be shaped ({len(x)},) like X's first axis, got {y.shape}")
    if len(x) == 0:
        raise FPTError(f"{path}: no series (X is empty)")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
    if bad.any():
        raise FPTError(f"{path}: X[{int(np.argmax(bad))}] holds NaN or inf; fill or drop it")
    x = x.astype(np.float64)
    series = [s.T if x.ndim == 3 else s[:, None] for s in x]
    return _labelled(series, y.tolist(), objective, path)


def read_labelled(path: str | Path, label: int | str = 0, objective: Objective | None = None) -> Labelled:
    """A file of labelled series, by its extension: .ts, .csv/.tsv, .npz."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ts":
        data = read_ts(path)
        if objective is not None and objective != data.objective:
            raise FPTError(f"{path}: its header declares a {data.objective} set, not {objective}")
        return data
    if suffix in (".csv", ".tsv"):
        return read_csv(path, label, objective)
    if suffix == ".npz":
        return read_npz(path, objective)
    raise FPTError(f"{path}: unknown time-series format {suffix or '(no extension)'!r}; use .ts, .csv, .tsv or .npz")


# ---- the recipe ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How a series becomes tokens. Defaults: what fpt's UCR tasks have always done."""

    normalise: Literal["global", "instance", "none"] = "global"
    patch: int = 1
    stride: int | None = None  # None: = patch (non-overlapping)
    channels: Literal["mixed", "independent"] = "mixed"

    def __post_init__(self) -> None:
        if self.normalise not in ("global", "instance", "none"):
            raise FPTError(f"task argument normalise must be global, instance or none, got {self.normalise!r}")
        if self.channels not in ("mixed", "independent"):
            raise FPTError(f"task argument channels must be mixed or independent, got {self.channels!r}")
        if self.stride is not None and not 0 < self.stride <= self.patch:
            raise FPTError(f"task argument stride must be between 1 and patch ({self.patch}), got {self.stride}")

    @property
    def step(self) -> int:
        return self.stride or self.patch

    def token_count(self, steps: int, channels: int) -> int:
        """Tokens of a series of `steps` time steps: windows of `patch` every `stride`, the last one zero-padded."""
        windows = 1 + max(0, -(-(steps - self.patch) // self.step))
        return windows * (channels if self.channels == "independent" else 1)

    def input_dim(self, channels: int) -> int:
        return self.patch * (1 if self.channels == "independent" else channels)

    def tokens(self, x: np.ndarray) -> np.ndarray:
        """(T, C) → (tokens, input_dim) float32: patches time-major within the token; channel-independent tokens are
        channel 0's patches, then channel 1's, ..."""
        steps, channels = x.shape
        windows = self.token_count(steps, 1)
        padded = np.zeros(((windows - 1) * self.step + self.patch, channels), dtype=np.float32)
        padded[:steps] = x
        starts = np.arange(windows) * self.step
        patches = padded[starts[:, None] + np.arange(self.patch)]  # (windows, patch, C)
        if self.channels == "independent":
            return np.ascontiguousarray(patches.transpose(2, 0, 1).reshape(-1, self.patch))
        return patches.reshape(windows, self.patch * channels)


def instance_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A series' own per-channel mean and std (std 1 where the channel is constant). x (T, C) → (C,), (C,)."""
    mean, std = x.mean(0), x.std(0)
    return mean, np.where(std > 1e-8, std, 1.0)


def global_stats(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every time step of `series` (the training split's), ignoring NaN."""
    fit = np.concatenate(series)
    mean, std = np.nanmean(fit, axis=0), np.nanstd(fit, axis=0)
    return mean, np.where(std > 0, std, 1.0)
