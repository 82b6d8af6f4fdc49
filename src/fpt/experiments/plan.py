"""A sweep file and the runs it plans: the grid of resolved configs, checked once before anything runs, and which of its
runs to run now given the finished records (lr_selection and lr_transfer choose lrs on validation as runs finish).

`Plan.of(sweep)` builds the grid; `plan.now(records)` lists the runs to run (or that ran) so far, `plan.total()` how
many runs the sweep holds once every lr choice is made. `fpt sweep` (fpt.experiments.sweep) runs them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fpt.config import TrainConfig, format_validation_error, identity, read_yaml, unknown_key
from fpt.errors import FPTError
from fpt.experiments.records import chosen_labels, latest_records
from fpt.experiments.settings import Record, lr_rank, setting_label


class LrTransfer(BaseModel):
    """Tasks whose lr is not searched but carried over: each setting's lr chosen on other tasks of the sweep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chosen_on: list[str] = Field(min_length=1, description="task labels on which each setting's lr grid runs")
    tasks: list[str] = Field(min_length=1, description="task labels that run each setting at the lr carried over")


class SweepConfig(BaseModel):
    """A sweep file: shared settings, tasks and models (label → TrainConfig keys), learning rates and seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="the sweep's name, recorded in every record")
    description: str = Field("", description="free text")
    base: dict[str, Any] = Field(default_factory=dict, description="TrainConfig keys shared by every run")
    tasks: dict[str, dict[str, Any]] = Field(min_length=1, description="task label → TrainConfig keys")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"fpt": {}}, min_length=1, description="model label → TrainConfig keys"
    )
    exclude: list[dict[Literal["task", "model"], str | list[str]]] = Field(
        default_factory=list,
        description="task × model pairs not to run, as a CI matrix excludes them: each {task: LABEL(S), model: "
        "LABEL(S)} drops the pairs it matches (a key left out matches every label)",
    )
    lr: float | list[float] | None = Field(None, description="learning rate(s), shorthand for base.lr")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="seeds of every setting")
    lr_selection: Literal["every-seed", "first-seed"] = Field(
        "every-seed",
        description="every-seed: every lr runs every seed; first-seed: every lr runs the first seed, the other seeds "
        "run only the lr chosen on the first seed's validation (a setting with k lrs and n seeds costs k + n - 1 runs "
        "instead of k × n)",
    )
    lr_transfer: LrTransfer | None = Field(
        None,
        description="search the lr grid on some tasks only: every setting runs on `tasks` at the lr it chose most "
        "often on `chosen_on` (by lr_selection's rule; a tie goes to the earliest listed task's choice)",
    )


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its resolved config, id and labels."""

    run_id: str
    config: TrainConfig
    task_label: str
    model_label: str
    axes: dict[str, Any]  # the setting's grid-axis values other than lr and seed, e.g. {"train": "output"}
    lr_chosen_on: tuple[str, ...] = ()  # lr_transfer: the tasks whose choice this run's lr is (not searched here)

    @property
    def setting(self) -> str:
        return setting_label(self.model_label, self.axes)

    def labels(self) -> Record:
        carried = {"lr_chosen_on": list(self.lr_chosen_on)} if self.lr_chosen_on else {}
        return {"task_label": self.task_label, "model_label": self.model_label, "axes": self.axes, **carried}


def run_id(cfg: TrainConfig) -> str:
    """12 hex digits of the SHA-256 of the config's identity (fpt.config.identity) as canonical JSON."""
    canonical = json.dumps(identity(cfg.model_dump(mode="json")), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_sweep(path: str | Path) -> SweepConfig:
    data = read_yaml(path)
    try:
        return SweepConfig(**data)
    except ValidationError as err:
        raise FPTError(f"{path}: {format_validation_error(err, SweepConfig, 'sweep')}") from None


@dataclass(frozen=True)
class Plan:
    """A sweep's whole grid, built and checked once, and the part of it whose runs are listed (--tasks, --models:
    the same runs, ids and lr choices as the whole sweep's, chosen on its other tasks' records where lr_transfer says
    so)."""

    sweep: SweepConfig
    grid: list[Run]  # every run, seeds × tasks × models × axes less `exclude`, before any lr selection
    tasks: list[str]
    models: list[str]

    @classmethod
    def of(cls, sweep: SweepConfig, where: str = "sweep", tasks: str | None = None, models: str | None = None) -> Plan:
        """The plan of `sweep`, validated (a bad entry is an FPTError naming it, `where` first); `tasks` and `models`
        are comma lists of labels (default every label; an unknown one is an error naming the labels there are)."""

        def labels(key: str, only: str | None, entries: dict[str, Any]) -> list[str]:
            there = f"; the {key}s of sweep {sweep.name!r} are"
            return list(entries) if only is None else chosen_labels(key, only, list(entries), there)

        return cls(sweep, grid(sweep, where), labels("task", tasks, sweep.tasks), labels("model", models, sweep.models))

    def mine(self, run: Run) -> bool:
        return run.task_label in self.tasks and run.model_label in self.models

    def now(self, records: list[Record]) -> list[Run]:
        """The part's runs listed now: with `lr_selection: first-seed`, a setting's later seeds once `records` hold
        every lr of its first seed, at the lr chosen there (fpt.experiments.settings.lr_rank, the rule `fpt report`
        uses); with `lr_transfer`, a setting's runs on its `tasks` once its lr is chosen on every `chosen_on` task."""
        return [r for r in selection(self.sweep, self.grid, records) if self.mine(r)]

    def settings(self) -> dict[tuple[str, str], list[Run]]:
        """(task label, setting) → its runs in the whole grid, for the part."""
        settings: dict[tuple[str, str], list[Run]] = {}
        for run in filter(self.mine, self.grid):
            settings.setdefault((run.task_label, run.setting), []).append(run)
        return settings

    def total(self) -> int:
        """How many runs the part holds once every lr choice is made: per setting k lrs × n seeds (every-seed),
        k + n - 1 (first-seed), or n where lr_transfer carries its lr over."""
        carried = set(self.sweep.lr_transfer.tasks) if self.sweep.lr_transfer else set()
        count = 0
        for (task, _), mine in self.settings().items():
            lrs, seeds = {r.config.lr for r in mine}, {r.config.seed for r in mine}
            if task in carried:
                count += len(seeds)
            elif self.sweep.lr_selection == "first-seed":
                count += len(lrs) + len(seeds) - 1
            else:
                count += len(mine)
        return count


# ---- the grid --------------------------------------------------------------------------------------------------------


def check_entry(where: str, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise FPTError(f"{where}: expected a mapping of config keys, got {type(entry).__name__}")
    unknown = [k for k in entry if k not in TrainConfig.model_fields]
    if unknown:
        raise FPTError(f"{where}: {unknown_key(unknown, TrainConfig.model_fields)}")
    if "seed" in entry:
        raise FPTError(f"{where}: seed is set by the sweep's seeds list, not per entry")
    empty = [k for k, v in entry.items() if isinstance(v, list) and not v]
    if empty:
        raise FPTError(f"{where}: {empty[0]} is an empty list (a grid axis needs at least one value)")


def exclusions(sweep: SweepConfig, where: str) -> set[tuple[str, str]]:
    """The (task label, model label) pairs the sweep's `exclude` rules drop; a label no entry has is an error."""
    pairs = set()
    for i, rule in enumerate(sweep.exclude):
        chosen = {}
        for key, entries in (("task", sweep.tasks), ("model", sweep.models)):
            labels = rule.get(key, list(entries))
            labels = [labels] if isinstance(labels, str) else labels
            unknown = [label for label in labels if label not in entries]
            if unknown:
                raise FPTError(f"{where}: exclude[{i}].{key}: no {key} labelled {unknown[0]!r}; the {key}s are: "
                               f"{', '.join(entries)}")  # fmt: skip
            chosen[key] = labels
        pairs |= set(itertools.product(chosen["task"], chosen["model"]))
    return pairs


def grid(sweep: SweepConfig, where: str = "sweep") -> list[Run]:
    """Every run of the sweep's grid (seeds × tasks × models × axes, less `exclude`), before any lr selection."""
    from fpt.backbones import BACKBONES
    from fpt.registry import MODELS
    from fpt.tasks import TASKS

    base = dict(sweep.base)
    if sweep.lr is not None:
        if "lr" in base:
            raise FPTError(f"{where}: lr is given both at the top level and in base; give it once")
        base["lr"] = sweep.lr
    check_entry(f"{where}: base", base)
    for section, entries in (("tasks", sweep.tasks), ("models", sweep.models)):
        for label, entry in entries.items():
            check_entry(f"{where}: {section}.{label}", entry)

    excluded = exclusions(sweep, where)
    runs: list[Run] = []
    seen: dict[str, str] = {}
    for seed, (task_label, task_entry), (model_label, model_entry) in itertools.product(
        sweep.seeds, sweep.tasks.items(), sweep.models.items()
    ):
        if (task_label, model_label) in excluded:
            continue
        merged = {**base, **task_entry, **model_entry}
        axis_keys = [k for k, v in merged.items() if isinstance(v, list)]
        for values in itertools.product(*(merged[k] for k in axis_keys)):
            point = dict(zip(axis_keys, values, strict=True))
            here = f"{where}: tasks.{task_label} × models.{model_label}"
            try:
                cfg = TrainConfig(**{**merged, **point, "seed": seed})
                TASKS.resolve(cfg.task), MODELS.resolve(cfg.model), BACKBONES.resolve(cfg.backbone)
            except ValidationError as err:
                raise FPTError(f"{here}: {format_validation_error(err, TrainConfig)}") from None
            except FPTError as err:
                raise FPTError(f"{here}: {err}") from None
            axes = {k: getattr(cfg, k) for k in axis_keys if k != "lr"}
            run = Run(run_id(cfg), cfg, task_label, model_label, axes)
            name = f"{task_label} × {run.setting} lr {cfg.lr} seed {seed}"
            if run.run_id in seen:
                raise FPTError(f"{where}: runs {seen[run.run_id]!r} and {name!r} have the same config; drop one")
            seen[run.run_id] = name
            runs.append(run)
    check_transfer(sweep, runs, where)
    return runs


def check_transfer(sweep: SweepConfig, runs: list[Run], where: str) -> None:
    """lr_transfer names tasks of the sweep, no task on both sides, and every setting it carries an lr to runs on at
    least one `chosen_on` task."""
    transfer = sweep.lr_transfer
    if transfer is None:
        return
    for key in ("chosen_on", "tasks"):
        unknown = [label for label in getattr(transfer, key) if label not in sweep.tasks]
        if unknown:
            raise FPTError(f"{where}: lr_transfer.{key}: no task labelled {unknown[0]!r}; the tasks are: "
                           f"{', '.join(sweep.tasks)}")  # fmt: skip
    both = [label for label in transfer.tasks if label in transfer.chosen_on]
    if both:
        raise FPTError(f"{where}: lr_transfer: task {both[0]!r} is both in chosen_on and in tasks")
    searched = {r.setting for r in runs if r.task_label in transfer.chosen_on}
    for run in runs:
        if run.task_label in transfer.tasks and run.setting not in searched:
            raise FPTError(f"{where}: lr_transfer: {run.setting!r} runs on {run.task_label!r} but on none of "
                           f"chosen_on ({', '.join(transfer.chosen_on)}): it has no lr to carry over")  # fmt: skip


# ---- which runs to run now ----------------------------------------------------------------------------------------


def selection(sweep: SweepConfig, runs: list[Run], records: list[Record]) -> list[Run]:
    """The runs of the grid `runs` that lr_selection and lr_transfer list now, given the finished `records`."""
    transfer = sweep.lr_transfer
    carried = set(transfer.tasks) if transfer else set()
    own = [r for r in runs if r.task_label not in carried]
    if sweep.lr_selection == "first-seed":
        first = sweep.seeds[0]
        chosen = chosen_lrs(own, {first}, records)
        own = [r for r in own if r.config.seed == first or chosen.get((r.task_label, r.setting)) == r.config.lr]
    kept = {r.run_id: r for r in own + transferred(sweep, runs, records)}
    return [kept[r.run_id] for r in runs if r.run_id in kept]


def choice_seeds(sweep: SweepConfig) -> set[int]:
    """The seeds whose validation chooses a setting's lr: the first under first-seed selection, else every seed."""
    return {sweep.seeds[0]} if sweep.lr_selection == "first-seed" else set(sweep.seeds)


def chosen_lrs(runs: list[Run], seeds: set[int], records: list[Record]) -> dict[tuple[str, str], float]:
    """(task label, setting) → the lr chosen on validation (lr_rank), for each setting whose runs on `seeds` have all
    finished."""
    latest = {r["run_id"]: r for r in latest_records(records)}
    by_setting: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.config.seed in seeds:
            by_setting.setdefault((run.task_label, run.setting), []).append(run)
    chosen: dict[tuple[str, str], float] = {}
    for key, mine in by_setting.items():
        if all(run.run_id in latest for run in mine):
            by_lr: dict[float, list[Record]] = {}
            for run in mine:
                by_lr.setdefault(run.config.lr, []).append(latest[run.run_id])
            chosen[key] = min(sorted(by_lr), key=lambda lr: lr_rank(by_lr[lr]))
    return chosen


def transferred(sweep: SweepConfig, runs: list[Run], records: list[Record]) -> list[Run]:
    """The runs on lr_transfer's tasks at each setting's carried-over lr: the one chosen on the most `chosen_on` tasks
    it runs on (a tie: the earliest listed task's), once chosen on every one of them; the others wait."""
    transfer = sweep.lr_transfer
    if transfer is None:
        return []
    chosen = chosen_lrs([r for r in runs if r.task_label in transfer.chosen_on], choice_seeds(sweep), records)
    on = {(r.task_label, r.setting) for r in runs}
    carried: dict[str, float] = {}
    voters: dict[str, tuple[str, ...]] = {}
    for setting in dict.fromkeys(r.setting for r in runs if r.task_label in transfer.tasks):
        voters[setting] = tuple(task for task in transfer.chosen_on if (task, setting) in on)
        votes = [chosen.get((task, setting)) for task in voters[setting]]
        if None in votes:
            continue
        carried[setting] = max(votes, key=votes.count)  # max keeps the first of equals: the earliest listed task's
    out = [
        replace(r, lr_chosen_on=voters[r.setting])
        for r in runs
        if r.task_label in transfer.tasks and carried.get(r.setting) == r.config.lr
    ]
    listed = {(r.task_label, r.setting) for r in out}
    for task, setting in on:
        if task in transfer.tasks and setting in carried and (task, setting) not in listed:
            raise FPTError(f"lr_transfer: {setting!r} chose lr {carried[setting]:g} on "
                           f"{', '.join(transfer.chosen_on)}, which its grid on {task!r} does not hold")  # fmt: skip
    return out
