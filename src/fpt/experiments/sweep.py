"""`fpt sweep`: a grid of training runs, each identified by a hash of its resolved config, appended to one JSONL file.

A sweep file names shared settings (`base`), tasks and models, each a mapping of TrainConfig keys:

    name: offline-suite
    base: {backbone: minilm, patience: null}
    tasks:
      bit-xor: {task: bit-xor, steps: 300}
      digits: {task: digits}
    models:
      fpt-pretrained: {model: fpt, init: pretrained}
      transformer: {model: transformer, init: random, lr: [1e-4, 3e-4]}   # a list anywhere is a grid axis
    lr: [1e-3, 3e-4]
    seeds: [0, 1, 2]

Each run's config is base < task entry < model entry (a later one replaces a key, task_args included), with `lr` at
the top level as shorthand for base's. The grid is seeds × tasks × models × the values of every list-valued key (lr
among them), seeds outermost, so a sweep stopped half-way holds every setting for its first seeds; `exclude` rules
drop task × model pairs (`exclude: [{task: airline, model: [minirocket, dtw]}]`). A setting is a
task, a model and its other axis values; `lr` is chosen per setting on validation by `fpt report`. With
`lr_selection: first-seed`, every lr runs the first seed only and the other seeds run at the lr chosen on its
validation, once the setting's first-seed runs have finished (k lrs × n seeds cost k + n - 1 runs, not k × n). With
`lr_transfer: {chosen_on: [bit-xor, digits], tasks: [listops]}`, a setting runs on ListOps only at the lr it chose
most often on bit-XOR and digits (every seed at that one lr), once those choices are made: a grid searched on cheap
tasks and carried over to costly ones.

A run's id is a short SHA-256 of its TrainConfig as canonical JSON (fpt.config.identity: every field, defaults
included, but the placement fields threads and device, which decide how fast and where a run computes, not what; a
field added after the first sweeps counts only when set away from its default, so new options keep old ids). Ids name
the config, not the code: every record keeps its commit and versions, and `fpt report` lists them. A run trains into
RUNS_DIR/<run_id>/ with its checkpoints; the record (fpt.train's result, the labels, the learning curve, what moved)
is appended to the results file once the run ends. A run is finished when its id is in the file, so re-running a sweep
skips finished runs and resumes a half-done one from its checkpoint; the numbers equal those of an unbroken sweep. A
run that fails with an FPTError (a non-finite loss at a high lr) is recorded with status "failed" and its error, and
counts as finished (`--retry-failed` runs it again). A run another sweep already trained (the same id in its results
file, `--reuse`) is copied from there, relabelled, instead of trained again.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from fpt import placement
from fpt.config import TrainConfig, format_validation_error, identity, read_yaml, unknown_key
from fpt.errors import FPTError
from fpt.experiments.records import (
    append_record,
    chosen_labels,
    finished_ids,
    latest_records,
    read_records,
    reusable,
)
from fpt.experiments.settings import lr_rank, setting_label

Record = dict[str, Any]


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


class SweepOptions(BaseModel):
    """How and where `fpt sweep` runs a sweep: the options of `fpt sweep` (named options, not settings: a setting here
    is a task × model of the grid). None of them changes a run's numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    results: Path | None = Field(
        None, description="results file (default runs/<sweep name>.jsonl)", json_schema_extra={"metavar": "FILE.jsonl"}
    )
    runs_dir: Path | None = Field(
        None, description="run folders (default: the results path without .jsonl)", json_schema_extra={"metavar": "DIR"}
    )
    workers: int = Field(1, ge=1, description="runs in parallel (processes, or Ray tasks)")
    backend: Literal["local", "ray"] = Field("local", description="local processes or Ray")
    ray_address: str | None = Field(
        None, description="a running Ray cluster (default: start Ray locally)", json_schema_extra={"metavar": "ADDRESS"}
    )
    retry_failed: bool = Field(False, description="run failed runs again (else they count as finished)")
    tasks: str | None = Field(
        None,
        description="only the runs of these task labels (comma list; default: every task); run ids are unchanged, "
        "so a later full sweep skips what ran",
        json_schema_extra={"metavar": "LABELS"},
    )
    models: str | None = Field(
        None, description="only the runs of these model labels (comma list; default: every model)",
        json_schema_extra={"metavar": "LABELS"},
    )  # fmt: skip
    quiet: bool = Field(False, description="no progress bar; one line per finished run")
    order: Literal["seed", "task"] = Field(
        "seed",
        description="seed: every task's first-seed runs, then the later seeds (a whole first-seed table soonest); "
        "task: one task at a time, its later seeds before the next task (whole cells soonest, e.g. under a time "
        "limit; --workers share that one task's runs)",
    )
    reuse: str | None = Field(
        None,
        description="other sweeps' results files (comma list): a run whose id (its config) has a finished record "
        "there is copied into this sweep's results, relabelled, instead of trained again",
        json_schema_extra={"metavar": "FILES"},
    )

    def reuse_files(self) -> list[Path]:
        paths = [Path(p.strip()) for p in (self.reuse or "").split(",") if p.strip()]
        for path in paths:
            if not path.is_file():
                raise FPTError(f"--reuse: no results file {path}")
        return paths

    def results_file(self, sweep: SweepConfig) -> Path:
        return self.results if self.results is not None else Path("runs") / f"{sweep.name}.jsonl"

    def runs_folder(self, sweep: SweepConfig) -> Path:
        return self.runs_dir if self.runs_dir is not None else default_runs_dir(self.results_file(sweep))


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


# ---- the sweep file → runs ---------------------------------------------------------------------------------------


def load_sweep(path: str | Path) -> SweepConfig:
    data = read_yaml(path)
    try:
        return SweepConfig(**data)
    except ValidationError as err:
        raise FPTError(f"{path}: {format_validation_error(err, SweepConfig, 'sweep')}") from None


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


def part(sweep: SweepConfig, options: SweepOptions | None) -> tuple[list[str], list[str]]:
    """The task and model labels `options` names (--tasks, --models; default every label). An unknown label is an
    error naming it and the labels there are."""
    options = options or SweepOptions()

    def labels(key: str, only: str | None, entries: dict[str, Any]) -> list[str]:
        where = f"; the {key}s of sweep {sweep.name!r} are"
        return list(entries) if only is None else chosen_labels(key, only, list(entries), where)

    return labels("task", options.tasks, sweep.tasks), labels("model", options.models, sweep.models)


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


def expand(
    sweep: SweepConfig, where: str = "sweep", records: list[Record] | None = None, options: SweepOptions | None = None
) -> list[Run]:
    """The runs of the sweep to run now, validated (a bad entry is an FPTError naming it) before anything runs.

    With `lr_selection: first-seed`, a setting's later seeds are listed only once `records` hold every lr of its first
    seed (finished), and then at the lr chosen there (fpt.experiments.settings.lr_rank, the rule `fpt report` uses);
    with `lr_transfer`, a setting's runs on its `tasks` are listed once its lr is chosen on every `chosen_on` task.
    With `options` (--tasks, --models), only those labels' runs: the same runs, ids and lr choices as the whole
    sweep's, chosen on its other tasks' records where lr_transfer says so."""
    runs = grid(sweep, where)
    tasks, models = part(sweep, options)
    return [r for r in selection(sweep, runs, records or []) if r.task_label in tasks and r.model_label in models]


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


def reused_record(run: Run, sweep_name: str, source: Path, record: Record) -> Record:
    """Another sweep's record of the same config (same run id), under this sweep's name and labels; `reused_from`
    names the file and sweep it was trained in. Its numbers, environment and commit are those of that training."""
    return {**record, "run_id": run.run_id, "sweep": sweep_name, **run.labels(),
            "reused_from": {"results": str(source), "sweep": record.get("sweep")}}  # fmt: skip


# ---- running ---------------------------------------------------------------------------------------------------------


def execute(run: Run, runs_dir: str | Path, sweep_name: str, threads: int | None = None) -> Record:
    """Train one run into RUNS_DIR/<run_id>/ (resuming its checkpoint; reusing its result.json if the run finished
    but its record was never written) and return its record. An FPTError becomes a failed record. The run's own log
    lines go to train.log in its folder. Runs in worker processes and Ray tasks as well as in the sweep's own."""
    from fpt.results import read_json
    from fpt.shipping.checkpoint import CHECKPOINT_FILE
    from fpt.train import train

    # A worker's share of the cores, unless the run names its threads (a placement field: the run id stays)
    cfg = run.config if run.config.threads or not threads else run.config.model_copy(update={"threads": threads})
    out = Path(runs_dir) / run.run_id
    out.mkdir(parents=True, exist_ok=True)
    head = {"run_id": run.run_id, "sweep": sweep_name, **run.labels()}
    resume = (out / CHECKPOINT_FILE).is_file()
    if (out / "result.json").is_file():  # finished, but killed before its record was written
        return {**head, "status": "ok", **read_json(out / "result.json"), "resumed": False, **kept(out)}
    with open(out / "train.log", "a") as log, contextlib.redirect_stderr(log):
        try:
            result = train(cfg, out=out, quiet=True, resume=resume)
        except FPTError as err:
            print(f"fpt: run failed: {err}", file=log)
            return {**head, **failed_record(cfg, err)}
    return {**head, "status": "ok", **result, "resumed": resume, **kept(out)}


def read_curve(out: Path) -> list[Record]:
    return [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines() if line.strip()]


def kept(out: Path) -> Record:
    """What a record keeps of its run folder, so that a report needs no folder: the learning curve, and what moved
    per layer × group (moved.json without its per-tensor rows; the folder keeps those)."""
    from fpt.moved import MOVED_FILE

    record: Record = {"curve": read_curve(out)}
    if (out / MOVED_FILE).is_file():
        record["moved"] = {k: v for k, v in json.loads((out / MOVED_FILE).read_text()).items() if k != "tensors"}
    return record


def failed_record(cfg: TrainConfig, err: FPTError) -> Record:
    """What a failed run records: its error, and the fields the report groups runs by."""
    import torch

    from fpt.freeze import parse_groups
    from fpt.results import environment
    from fpt.train import resolve_device

    try:
        device = resolve_device(cfg.device)
    except FPTError:
        device = torch.device("cpu")
    return {
        "status": "failed",
        "error": str(err),
        "task": cfg.task,
        "model": cfg.model,
        "backbone": cfg.backbone,
        "init": cfg.init,
        "train_groups": list(parse_groups(cfg.train)),
        "seed": cfg.seed,
        "lr": cfg.lr,
        "config": cfg.model_dump(),
        "environment": environment(device),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if sys.platform == "linux":  # die with the sweep: an orphan would go on writing into a run a re-run resumes
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def run_local(runs: list[Run], runs_dir: Path, sweep_name: str, workers: int) -> Iterator[Record]:
    """Records of `runs` as they finish: in this process (workers=1) or in a pool of spawned worker processes."""
    if workers == 1:
        for run in runs:
            yield execute(run, runs_dir, sweep_name)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, placement.available_cores() // workers)
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _init_worker, (threads,))
    try:
        pending = {pool.submit(execute, run, runs_dir, sweep_name, threads) for run in runs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run_ray(runs: list[Run], runs_dir: Path, sweep_name: str, workers: int, address: str | None) -> Iterator[Record]:
    """Records of `runs` as they finish, each run a Ray task (on the local machine, or the cluster at `address`).
    The runs' folders must be on a file system every node sees for a killed sweep to resume half-done runs."""
    try:
        import ray
    except ImportError:
        raise FPTError("--backend ray needs Ray: pip install 'fpt[ray]'") from None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=placement.available_cores(), include_dashboard=False, log_to_driver=False)
    try:
        threads = max(1, int(ray.available_resources().get("CPU", 1)) // workers)
        task = ray.remote(num_cpus=threads)(execute)
        pending = [task.remote(run, str(runs_dir), sweep_name, threads) for run in runs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        ray.shutdown()


def describe(record: Record) -> str:
    labels = f"{record['task_label']} × {setting_label(record['model_label'], record['axes'])}"
    run = f"{labels} lr {record['lr']:g} seed {record['seed']}"
    if record["status"] != "ok":
        return f"{run}: FAILED ({record['error']})"
    metric = record.get("metric") or "accuracy"
    shown = "" if metric == "accuracy" else f" {metric}"
    return (
        f"{run}: test{shown} {record[f'test_{metric}']:.4f} val{shown} {record[f'val_{metric}']:.4f} "
        f"({record['train_seconds']:.0f} s)"
    )


def run_sweep(
    sweep: SweepConfig, options: SweepOptions | None = None, log: Callable[[str], None] | None = None
) -> list[Record]:
    """Run every unfinished run of `sweep`, appending each record to the results file as it finishes; returns the
    records of the sweep's runs (latest per id)."""
    options = options or SweepOptions()
    results, runs_dir, workers = options.results_file(sweep), options.runs_folder(sweep), options.workers
    runs = expand(sweep, records=read_records(results), options=options)
    done = finished_ids(read_records(results), options.retry_failed)
    todo = [r for r in runs if r.run_id not in done]
    others = reusable(options.reuse_files())
    bar = tqdm(
        total=len(runs) + waiting(sweep, runs, options),
        initial=len(runs) - len(todo),
        desc=sweep.name,
        unit="run",
        disable=options.quiet,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    say = log or (lambda line: bar.write(line, file=sys.stderr))
    later = waiting(sweep, runs, options)
    say(
        f"{sweep.name}: {len(runs) + later} runs, {len(runs) - len(todo)} finished, {len(todo)} to run"
        + (f", {later} waiting for their setting's lr choice" if later else "")
        + f" → {results}"
    )
    started, tried = time.perf_counter(), set()
    try:
        while todo:  # with lr_selection first-seed, the later seeds' runs appear once their first seed has finished
            for run in (r for r in todo if r.run_id in others):  # copied: finished in the file, never tried here
                source, record = others[run.run_id]
                copy = reused_record(run, sweep.name, source, record)
                append_record(results, copy)
                bar.update()
                say(f"{describe(copy)} [reused from {source}]")
            todo = [r for r in todo if r.run_id not in others]
            if options.order == "task" and todo:  # the first task (in the sweep's order) with runs left
                task = next(label for label in sweep.tasks if any(r.task_label == label for r in todo))
                todo = [r for r in todo if r.task_label == task]
            if options.backend == "ray":
                records = run_ray(todo, runs_dir, sweep.name, workers, options.ray_address)
            else:
                records = run_local(todo, runs_dir, sweep.name, workers)
            try:
                for record in records:
                    append_record(results, record)
                    bar.update()
                    say(describe(record))
            finally:
                if hasattr(records, "close"):
                    records.close()  # shut the pool or Ray down now, also when interrupted
            tried |= {r.run_id for r in todo}  # a failed run is not tried again in this call
            runs = expand(sweep, records=read_records(results), options=options)
            done = finished_ids(read_records(results), options.retry_failed) | tried
            todo = [r for r in runs if r.run_id not in done]
            bar.total = len(runs) + waiting(sweep, runs, options)
            bar.refresh()
    finally:
        bar.close()
    ours = {r.run_id for r in runs}
    final = [r for r in latest_records(read_records(results)) if r["run_id"] in ours]
    failed = sum(r["status"] == "failed" for r in final)
    say(
        f"{sweep.name}: {len(final)} of {len(runs)} runs finished ({failed} failed) in "
        f"{time.perf_counter() - started:.0f} s → {results}"
    )
    return final


def planned(sweep: SweepConfig, options: SweepOptions | None = None) -> int:
    """How many runs the sweep (or its part, `options`) holds once every lr choice is made: per setting k lrs × n seeds
    (every-seed), k + n - 1 (first-seed), or n where lr_transfer carries its lr over."""
    carried = set(sweep.lr_transfer.tasks) if sweep.lr_transfer else set()
    total = 0
    for (task, _), mine in settings_of(sweep, options).items():
        lrs, seeds = {r.config.lr for r in mine}, {r.config.seed for r in mine}
        if task in carried:
            total += len(seeds)
        elif sweep.lr_selection == "first-seed":
            total += len(lrs) + len(seeds) - 1
        else:
            total += len(mine)
    return total


def settings_of(sweep: SweepConfig, options: SweepOptions | None = None) -> dict[tuple[str, str], list[Run]]:
    """(task label, setting) → its runs in the whole grid, for the sweep or its part (`options`)."""
    tasks, models = part(sweep, options)
    settings: dict[tuple[str, str], list[Run]] = {}
    for run in grid(sweep):
        if run.task_label in tasks and run.model_label in models:
            settings.setdefault((run.task_label, run.setting), []).append(run)
    return settings


def waiting(sweep: SweepConfig, runs: list[Run], options: SweepOptions | None = None) -> int:
    """How many of the sweep's runs (`runs` being those `expand` lists now) wait for their lr to be chosen."""
    return planned(sweep, options) - len(runs)


def default_runs_dir(results: Path) -> Path:
    """results/offline-suite.jsonl → results/offline-suite/ (one folder per run id inside)."""
    return results.with_suffix("")


def dry_run(sweep: SweepConfig, options: SweepOptions | None = None) -> str:
    """The runs of `sweep` (id, done or to do, labels, lr, seed) and their count, as text."""
    options = options or SweepOptions()
    records = read_records(options.results_file(sweep))
    runs = expand(sweep, records=records, options=options)
    latest = {r["run_id"]: r for r in latest_records(records)}
    others = reusable(options.reuse_files())
    lines = []
    todo = copied = 0
    for run in runs:
        record = latest.get(run.run_id)
        status = "todo" if record is None else "done" if record.get("status") == "ok" else "failed"
        if status == "todo" and run.run_id in others:
            status, copied = "reuse", copied + 1
        elif status == "todo" or (status == "failed" and options.retry_failed):
            todo += 1
        lines.append(
            f"{run.run_id}  {status:6}  {run.task_label}  {run.setting}  lr {run.config.lr:g}  seed {run.config.seed}"
        )
    settings = settings_of(sweep, options)
    pairs = {(r.task_label, r.setting, r.config.lr) for r in runs}
    later = waiting(sweep, runs, options)
    if sweep.lr_selection == "every-seed":
        shape = f"{len(pairs)} (setting, lr) pairs × {len(sweep.seeds)} seeds"
    else:
        shape = f"every lr on seed {sweep.seeds[0]}, the chosen lr on {len(sweep.seeds) - 1} more seeds"
    if sweep.lr_transfer:
        shape += (f"; on {', '.join(sweep.lr_transfer.tasks)} every seed at the lr chosen on "
                  f"{', '.join(sweep.lr_transfer.chosen_on)}")  # fmt: skip
    lines.append(
        f"{sweep.name}: {len(runs) + later} runs ({shape}), {len(settings)} settings; "
        f"{len(runs) - todo - copied} finished, {todo} to run"
        + (f", {copied} to copy from --reuse" if copied else "")
        + (f", {later} waiting for their lr choice" if later else "")
    )
    return "\n".join(lines)
