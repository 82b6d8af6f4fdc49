"""Settings and their statistics: runs grouped by task × model (and grid axes), the lr chosen on validation, and the
mean ± 95% interval cells that every table and plot of `fpt report` shows.

Protocol (Rothermel et al. 2021): a setting's learning rate is chosen on the validation split, by the mean
best-on-validation accuracy over the seeds that every lr ran (all seeds, or the first seed of a sweep that ran its
other seeds at the lr chosen there), and only that lr's test numbers are reported. An lr with a failed (diverged)
seed ranks below every lr without one, whatever their means; ties go to the smaller lr. Intervals are scipy's: the
one-sample t-interval of the mean over seeds, and Welch's interval of a difference of two settings' means.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from math import floor, isfinite, log10
from statistics import mean
from typing import Any

from scipy import stats

Record = dict[str, Any]
CONVERGED = 0.95  # steps to converge: the first validation reaching this fraction of the run's best val accuracy


def metric_of(record: Record) -> str:
    """The metric a run was selected on: accuracy (higher is better), or a regression task's mse / mae / mase."""
    return record.get("metric") or "accuracy"


def scale_of(metric: str) -> float:
    """Accuracy is shown in %, error metrics in the data's own units."""
    return 100.0 if metric == "accuracy" else 1.0


def digits_of(metric: str, magnitude: float | None = None) -> int:
    """Decimals to show: accuracy in % to 0.1; an error metric to 3 decimals, or to 3 significant digits of a
    `magnitude` below 0.1 (a task whose MSE is 0.0018 shows 0.00184, not 0.002)."""
    if metric == "accuracy":
        return 1
    if not magnitude or not isfinite(magnitude) or abs(magnitude) >= 0.1:
        return 3
    return min(2 - floor(log10(abs(magnitude))), 12)


def val_score(record: Record) -> float:
    """The run's best validation number, higher is better: accuracy, or minus the error metric."""
    metric = metric_of(record)
    value = record[f"val_{metric}"]
    return value if metric == "accuracy" else -value


# ---- statistics -----------------------------------------------------------------------------------------------------


def half_width(interval) -> float:
    return float(interval.high - interval.low) / 2


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None for one value)."""
    if len(values) < 2:
        return values[0], None
    with warnings.catch_warnings():  # equal values: scipy warns of precision loss and gives the 0-width interval
        warnings.simplefilter("ignore", RuntimeWarning)
        return mean(values), half_width(stats.ttest_1samp(values, 0.0).confidence_interval(0.95))


def welch(a: list[float], b: list[float]) -> tuple[float, float | None]:
    """mean(a) - mean(b) and the half-width of its 95% Welch interval (None if either has one value)."""
    diff = mean(a) - mean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return diff, half_width(interval)


def cell(
    values: list[float], scale: float = 100.0, digits: int = 1, failed: int = 0, capped: int = 0, carried: bool = False
) -> str:
    """'97.1 ± 1.2 (n=3)', '97.1 (n=1, no CI)'; failed seeds are named: '(n=2, 1 failed)', seeds that stopped at
    their step cap instead of a validation plateau: '(n=3, 2 at cap)', and an lr carried over from other tasks
    (a sweep's lr_transfer), not chosen on this one: '(n=3, lr carried)'."""
    note = (f", {failed} failed" if failed else "") + (f", {capped} at cap" if capped else "")
    note += ", lr carried" if carried else ""
    if not values:
        return f"failed (n=0{note})" if failed else "–"
    m, half = mean_ci([scale * v for v in values])
    if half is None:
        return f"{m:.{digits}f} (n=1, no CI{note})"
    return f"{m:.{digits}f} ± {half:.{digits}f} (n={len(values)}{note})"


# ---- settings and lr selection ------------------------------------------------------------------------------------


@dataclass
class Setting:
    """One task × model (with its other axis values): its runs at every lr and seed, and the lr chosen."""

    task: str
    label: str
    by_lr: dict[float, list[Record]] = field(default_factory=dict)
    lr: float | None = None

    @property
    def chosen(self) -> list[Record]:
        return sorted(self.by_lr.get(self.lr, []), key=lambda r: r["seed"])

    @property
    def ok(self) -> list[Record]:
        return [r for r in self.chosen if r["status"] == "ok"]

    @property
    def failed(self) -> int:
        return len(self.chosen) - len(self.ok)

    def on_common_seeds(self, lr: float) -> list[Record]:
        """The runs of `lr` on the seeds that every lr of the setting ran (all of them if no seed is common)."""
        common = set.intersection(*({r["seed"] for r in runs} for runs in self.by_lr.values()))
        return [r for r in self.by_lr[lr] if r["seed"] in common] or self.by_lr[lr]

    @property
    def first(self) -> Record:
        return next(iter(self.by_lr.values()))[0]

    @property
    def model(self) -> str:
        return self.first["model"]

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.first["train_groups"])

    @property
    def metric(self) -> str:
        return metric_of(self.first)

    def values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.ok]

    @property
    def capped(self) -> int:
        """Seeds (of the chosen lr) that ran to their step cap: not shown to have converged."""
        return sum(not plateaued(r) for r in self.ok)

    @property
    def carried(self) -> bool:
        """Whether the chosen lr was carried over from other tasks (lr_transfer) rather than searched on this one."""
        return any(r.get("lr_chosen_on") for r in self.chosen)

    def cell(self, metric: str | None = None) -> str:
        """The chosen lr's test number (the task's metric unless `metric` names another field) over seeds."""
        values = self.values(metric or f"test_{self.metric}")
        digits = digits_of(self.metric, mean(values) if values else None)
        return cell(values, scale_of(self.metric), digits, self.failed, self.capped, self.carried)


def params_cell(s: Setting) -> str:
    """Trained weights of the setting's runs and their share of the model's: '37,442 (0.03%)'."""
    runs = s.chosen or next(iter(s.by_lr.values()))
    trained = sorted({r["trainable_params"] for r in runs if r.get("trainable_params") is not None})
    total = max((r.get("total_params") or 0 for r in runs), default=0)
    if not trained:
        return "–"
    text = " / ".join(f"{n:,}" for n in trained)  # one count unless runs of the setting differ
    if not total:
        return text
    share = 100 * trained[-1] / total
    return text + (f" ({share:.0f}%)" if share >= 10 else f" ({share:.2f}%)" if share >= 0.1 else f" ({share:.2g}%)")


def setting_label(model_label: str, axes: dict[str, Any]) -> str:
    """'fpt' or, with grid axes besides lr and seed, 'fpt (train=output)'."""
    return model_label + (f" ({', '.join(f'{k}={v}' for k, v in axes.items())})" if axes else "")


def plateaued(record: Record) -> bool:
    """Whether the run ended on a validation plateau: early stopping ended it (`patience` validations without a better
    val accuracy) before its step cap. A run that used its whole budget may still have been improving."""
    return bool(record.get("stopped_early"))


def lr_rank(runs: list[Record]) -> tuple[int, float]:
    """Sort key of an lr (smaller is better): failed seeds first, then minus the mean val score of the others (accuracy,
    or minus an error metric)."""
    ok = [val_score(r) for r in runs if r["status"] == "ok"]
    return len(runs) - len(ok), -mean(ok) if ok else 0.0


def select(records: list[Record]) -> list[Setting]:
    """Group records into settings (in order of first appearance) and choose each one's lr on validation."""
    settings: dict[tuple[str, str], Setting] = {}
    for r in records:
        key = (r["task_label"], setting_label(r["model_label"], r.get("axes") or {}))
        setting = settings.setdefault(key, Setting(*key))
        setting.by_lr.setdefault(r["lr"], []).append(r)
    for s in settings.values():
        s.lr = min(sorted(s.by_lr), key=lambda lr: lr_rank(s.on_common_seeds(lr)))
    return list(settings.values())


def grouped_by_task(settings: list[Setting]) -> list[Setting]:
    """The settings, each task's together (tasks, and settings within one, in order of first appearance): a sweep
    run by several processes, or with seeds waiting for an lr choice, finishes its tasks' runs interleaved."""
    tasks = list(dict.fromkeys(s.task for s in settings))
    labels = list(dict.fromkeys(s.label for s in settings))
    return sorted(settings, key=lambda s: (tasks.index(s.task), labels.index(s.label)))


def steps_to_converge(record: Record) -> int | None:
    """The first validated step whose val accuracy reaches CONVERGED × the run's best (for an error metric: comes
    within best / CONVERGED)."""
    curve = record.get("curve") or []
    metric = metric_of(record)
    if not curve:
        return None
    values = [row[f"val_{metric}"] for row in curve]
    if metric == "accuracy":
        return next(row["step"] for row, v in zip(curve, values, strict=True) if v >= CONVERGED * max(values))
    return next(row["step"] for row, v in zip(curve, values, strict=True) if v <= min(values) / CONVERGED)
