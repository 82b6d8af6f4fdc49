"""The time budget of a sweep: --time-limit's durations and deadline, each run's expected time from the results
file, and the time-left lines of --dry-run and of a sweep that stopped under its limit."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from fpt.errors import FPTError
from fpt.experiments.plan import Run
from fpt.experiments.records import latest_records, read_records
from fpt.experiments.settings import Record

DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
CLOCK = re.compile(r"(\d+):([0-5]\d)(?::([0-5]\d))?")


def duration_seconds(text: str) -> int:
    """'2h', '90m', '1h30m', '45s', '1d12h' or H:MM[:SS] as seconds; a ValueError naming the forms otherwise."""
    text = text.strip()
    if (match := DURATION.fullmatch(text)) and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    elif match := CLOCK.fullmatch(text):
        days, (hours, minutes, seconds) = 0, (int(g or 0) for g in match.groups())
    else:
        raise ValueError("not a duration (give e.g. 2h, 90m, 1h30m, 45s or H:MM[:SS])")
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclass(frozen=True)
class Deadline:
    """A sweep's --time-limit: when it is up (a time.time()), and the results file whose records say what a run of
    each task × model takes (read as each run is about to start, so that the runs finished meanwhile count)."""

    at: float
    results: Path


Kind = tuple[str | None, ...]  # a machine kind: (gpu, cpu, cpu_model, cpu_capability) as records name them


def expected_seconds(run: Run, results: str | Path) -> float | None:
    """What `run` is expected to take on this machine, from `results` as the file is now (estimate over mean_seconds
    at this machine's kind)."""
    return estimate(run, mean_seconds(latest_records(read_records(results)), kind=here([run])))


def kind_of(record: Record) -> Kind:
    """The machine kind a record's run trained on, from its environment (None fields where it names none)."""
    hw = record.get("environment", {}).get("hardware", {})
    return tuple(hw.get(k) for k in ("gpu", "cpu", "cpu_model", "cpu_capability"))


def kind_here(device: str = "auto") -> Kind:
    """This machine's kind for a run on `device`, as its record will name it."""
    from fpt.results import hardware
    from fpt.train import resolve_device

    return kind_of({"environment": {"hardware": hardware(resolve_device(device))}})


def here(to_run: list[Run]) -> Kind | None:
    """The machine kind the runs would train on here (their first's device; None with no runs, or where this machine
    lacks the device they name: training says so)."""
    try:
        return kind_here(to_run[0].config.device) if to_run else None
    except FPTError:
        return None


def kind_means(latest: list[Record], kind: Kind) -> tuple[dict[tuple[str, str, str], float], ...]:
    """mean_seconds over the runs of machines of `kind`, and over the others'."""
    return (
        mean_seconds([r for r in latest if kind_of(r) == kind]),
        mean_seconds([r for r in latest if kind_of(r) != kind]),
    )


def speed_factor(latest: list[Record], kind: Kind) -> tuple[float, int]:
    """How much longer a run takes on machines of `kind` than on the others, and from how many task × backbone ×
    model keys: the geometric mean, over the keys with finished runs on both, of the ratio of their mean times; (1.0,
    0) where no key has both."""
    return ratio(*kind_means(latest, kind))


def ratio(mine: dict[tuple[str, str, str], float], others: dict[tuple[str, str, str], float]) -> tuple[float, int]:
    """speed_factor of the means of one kind (`mine`) against the others'."""
    both = [k for k in mine if k in others]
    if not both:
        return 1.0, 0
    return math.exp(sum(math.log(mine[k] / others[k]) for k in both) / len(both)), len(both)


def key(run: Run) -> tuple[str, str, str]:
    """`run`'s task × backbone × model, the key of mean_seconds' means."""
    return run.task_label, run.config.backbone, run.model_label


def estimate(run: Run, means: dict[tuple[str, str, str], float]) -> float | None:
    """`run`'s expected time from the task × backbone × model means (mean_seconds): its own model's, else, before its
    model has finished a run on the task, the slowest mean among the task's other models on the same backbone (a time
    limit is a job's walltime: better to leave a run for later than to be killed in it; another backbone's times say
    nothing: a 135M decoder step is not a 22M encoder's); None when no run of the task on the backbone has finished."""
    task, backbone, model = key(run)
    if (own := means.get((task, backbone, model))) is not None:
        return own
    return max((seconds for (t, b, _), seconds in means.items() if (t, b) == (task, backbone)), default=None)


def seconds_left(out: Path, expected: float | None) -> float:
    """What the run in folder `out` is expected to take still: `expected` (a whole run's time) less the share of its
    steps that its checkpoint has done; 0 when nothing is known."""
    from fpt.shipping.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT
    from fpt.shipping.patch import read_metadata

    if expected is None or not (out / CHECKPOINT_FILE).is_file():
        return expected or 0.0
    try:
        meta = read_metadata(out / CHECKPOINT_FILE, CHECKPOINT_FORMAT)
        return expected * max(0.0, 1 - meta["step"] / meta["config"]["steps"])
    except (FPTError, KeyError, TypeError, ZeroDivisionError):  # a bad checkpoint: training says what is wrong
        return expected


def mean_seconds(latest: list[Record], kind: Kind | None = None) -> dict[tuple[str, str, str], float]:
    """Each task × backbone × model's mean time per run among the finished runs in `latest` (a record per run id; any
    lr, seed or thread count): their wall time (loading, validation and test included) where records of runs trained
    in one go hold it, else their training time alone. Time queued for a core counts in the wall time. With a machine
    `kind`, the means are that kind's: a key's own runs on it where it has some, else the other kinds' mean times
    speed_factor (a results file gathered on several machine kinds: a slower CPU takes each run longer)."""
    if kind is not None:
        mine, others = kind_means(latest, kind)
        factor, _ = ratio(mine, others)
        return {k: v * factor for k, v in others.items()} | mine
    wall: dict[tuple[str, str, str], list[float]] = {}
    train: dict[tuple[str, str, str], list[float]] = {}
    for r in latest:
        if r.get("status") != "ok" or not r.get("train_seconds"):
            continue
        key = (r["task_label"], r.get("backbone", ""), r["model_label"])
        train.setdefault(key, []).append(r["train_seconds"])
        if r.get("wall_seconds") and not r.get("resumed"):
            wall.setdefault(key, []).append(r["wall_seconds"])
    return {key: sum(s) / len(s) for key, seconds in train.items() for s in [wall.get(key) or seconds]}


def clock(seconds: float) -> str:
    """Seconds as text for a sweep's messages: '1.5 h', '12 min', '40 s'."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def counted(n: int, noun: str) -> str:
    """'1 task', '7 tasks'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def runs(n: int) -> str:
    """'1 run', '3 runs'."""
    return counted(n, "run")


def time_left(to_run: list[Run], latest: list[Record], kind: Kind | None = None) -> list[str]:
    """What the runs to do will cost, for planning: each at its estimate (its task × model's mean time per run, else
    its task's slowest model's on the same backbone), on machines of `kind` where given (mean_seconds)."""
    means = mean_seconds(latest, kind)
    known = [seconds for run in to_run if (seconds := estimate(run, means)) is not None]
    if not known:
        return []
    unknown = len(to_run) - len(known)
    borrowed = sum(key(run) not in means for run in to_run) - unknown
    return [
        f"time left: about {clock(sum(known))} one run at a time for the {runs(len(known))} to run whose task has "
        "finished runs on their backbone (each at its task and model's mean: wall time where records hold it, else "
        "training time alone"
        + (f"; {borrowed} whose model has none on the task yet at its slowest model's" if borrowed else "")
        + ")"
        + (f"; {runs(unknown)} to run whose task has none on their backbone yet" if unknown else "")
        + kind_note(latest, kind)
    ]


def kind_note(latest: list[Record], kind: Kind | None) -> str:
    """How time_left took other machine kinds' times, when the records come from more than this one."""
    if kind is None or all(kind_of(r) == kind for r in latest):
        return ""
    factor, pairs = speed_factor(latest, kind)
    if not pairs:
        return "; other machine kinds' times as they are: no task × model has finished a run on this kind yet"
    return (
        f"; on this machine's kind: its own runs' times, else other kinds' × {factor:.2f} (the ratio over the "
        f"{counted(pairs, 'task × model pair')} run on both)"
    )


def left_for_later(late: dict[str, float], limit: float) -> str:
    """What --time-limit left unstarted: `late` maps each such run to the seconds it needed (0: no estimate)."""
    left, known = max(0.0, limit - time.time()), [v for v in late.values() if v > 0]
    why = [f"the shortest needs {clock(min(known))}"] if known else []
    if len(known) < len(late):
        why.append(f"{len(late) - len(known)} with no estimate, once the time was up")
    return (
        f"{runs(len(late))} not started, expected to outlast the {clock(left)} left ({'; '.join(why)}); the same "
        "command continues them"
    )
