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
tasks and carried over to costly ones. fpt.experiments.plan builds the grid and makes those choices; this module runs
the runs.

A run's id is a short SHA-256 of its TrainConfig as canonical JSON (fpt.config.identity: every field, defaults
included, but the placement fields threads and device, which decide how fast and where a run computes, not what; a
field added after the first sweeps counts only when set away from its default, so new options keep old ids). Ids name
the config, not the code: every record keeps its commit and versions, and `fpt report` lists them. A run trains into
RUNS_DIR/<run_id>/ with its checkpoints; the record (fpt.train's result, the labels, the learning curve, what moved)
is appended to the results file once the run ends. A run is finished when its id is in the file, so re-running a sweep
skips finished runs and resumes a half-done one from its checkpoint; the numbers equal those of an unbroken sweep. A
run that fails with an FPTError (a non-finite loss at a high lr) is recorded with status "failed" and its error, and
counts as finished (`--retry-failed` runs it again). Under `--time-limit`, a run starts only if its task × model's mean
time per run (less what its checkpoint has done) fits in the time left; the others wait for the next call. A run
another sweep already trained (the same id in its results file, `--reuse`) is copied from there, relabelled, instead
of trained again.

Several sweep processes may share one config, results file and runs folder (split by hand with `--tasks`, or just
started twice, on one machine or on hosts that share the folder): a run trains under a lock on its folder, a process
that finds a run locked leaves it to its holder and takes the next one (or waits for it, when nothing else is left),
and a record is appended only while the file has no finished record of its id, so each run trains and is written once.
Under `--order task` a process goes on to the next task's runs while another holds the last ones of the current task.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from fpt import placement
from fpt.config import TrainConfig
from fpt.errors import FPTError
from fpt.experiments.budget import (
    Deadline,
    duration_seconds,
    expected_seconds,
    here,
    left_for_later,
    seconds_left,
    time_left,
)
from fpt.experiments.plan import Plan, Run, SweepConfig
from fpt.experiments.records import append_record, finished_ids, latest_records, read_records, reusable
from fpt.experiments.settings import Record, setting_label


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

    time_limit: str | None = Field(
        None,
        description="the sweep's own time limit (2h, 90m, 1h30m, H:MM[:SS]): it starts no run expected to outlast it "
        "(each at its task × model's mean time per run among finished runs, less what a half-done run's checkpoint "
        "has done) and none once it is up; a run that overruns is not stopped. The same command continues later",
        json_schema_extra={"metavar": "DURATION"},
    )

    @field_validator("time_limit")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and duration_seconds(value) <= 0:
            raise ValueError("must be longer than 0 s")
        return value

    def plan(self, sweep: SweepConfig) -> Plan:
        """The sweep's plan, narrowed to --tasks and --models."""
        return Plan.of(sweep, tasks=self.tasks, models=self.models)

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


# ---- running ---------------------------------------------------------------------------------------------------------


def reused_record(run: Run, sweep_name: str, source: Path, record: Record) -> Record:
    """Another sweep's record of the same config (same run id), under this sweep's name and labels; `reused_from`
    names the file and sweep it was trained in. Its numbers, environment and commit are those of that training."""
    return {**record, "run_id": run.run_id, "sweep": sweep_name, **run.labels(),
            "reused_from": {"results": str(source), "sweep": record.get("sweep")}}  # fmt: skip


RUN_LOCK = "sweep.lock"  # in a run's folder: held by the process training the run
BUSY = "busy"  # what execute returns for a run another process holds: no record, the run is left to it
LATE = "late"  # what execute returns for a run --time-limit leaves for later: no record


def execute(
    run: Run,
    runs_dir: str | Path,
    sweep_name: str,
    threads: int | None = None,
    deadline: Deadline | None = None,
) -> Record:
    """Train one run into RUNS_DIR/<run_id>/ (resuming its checkpoint; reusing its result.json if the run finished
    but its record was never written) and return its record. An FPTError becomes a failed record. The run's own log
    lines go to train.log in its folder. Runs in worker processes and Ray tasks as well as in the sweep's own. A run
    whose folder another process holds (RUN_LOCK) is not touched: the return is {"run_id", "status": BUSY}. With a
    `deadline`, a run whose expected time (expected_seconds; unknown: 0), less what its checkpoint has done, would
    outlast it does not start: the return is {"run_id", "status": LATE, "needs": seconds}."""
    from fpt.results import read_json
    from fpt.shipping.checkpoint import CHECKPOINT_FILE
    from fpt.train import train

    started = time.perf_counter()

    # A worker's share of the cores, unless the run names its threads (a placement field: the run id stays)
    cfg = run.config if run.config.threads or not threads else run.config.model_copy(update={"threads": threads})
    out = Path(runs_dir) / run.run_id
    out.mkdir(parents=True, exist_ok=True)
    head = {"run_id": run.run_id, "sweep": sweep_name, **run.labels()}
    with claim(out) as mine:
        if not mine:
            return {"run_id": run.run_id, "status": BUSY}  # another sweep process is training it
        resume = (out / CHECKPOINT_FILE).is_file()
        if (out / "result.json").is_file():  # finished, but killed before its record was written (or another
            done = read_json(out / "result.json")  # process trained it and writes it: run_sweep writes it once)
            return {**head, "status": "ok", **done, "resumed": False, **kept(out)}
        if deadline is not None:
            needs = seconds_left(out, expected_seconds(run, deadline.results))
            if time.time() + needs > deadline.at:
                return {"run_id": run.run_id, "status": LATE, "needs": needs}
        with open(out / "train.log", "a") as log, contextlib.redirect_stderr(log):
            try:
                result = train(cfg, out=out, quiet=True, resume=resume)
            except FPTError as err:
                print(f"fpt: run failed: {err}", file=log)
                return {**head, **failed_record(cfg, err), **wall(started)}
        return {**head, "status": "ok", **result, "resumed": resume, **kept(out), **wall(started)}


def wall(started: float) -> Record:
    """A record's wall time: the run's seconds in this call (loading, validation and test included; of a resumed
    run, the part since it resumed), by which --time-limit plans the runs of its task and model."""
    return {"wall_seconds": round(time.perf_counter() - started, 3)}


@contextlib.contextmanager
def claim(out: Path) -> Iterator[bool]:
    """Hold the run folder `out`'s lock for the block if no other process holds it: yields whether this one does.
    The lock goes with the file's closing, or with its process's death."""
    with open(out / RUN_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True


def wait_for(folders: list[Path], every: float = 2.0, until: float | None = None) -> None:
    """Wait until a process that holds one of the run `folders` lets it go (its run ended, or the process died), or
    until the time.time() `until`."""
    while until is None or time.time() < until:
        for out in folders:
            with claim(out) as free:
                if free:
                    return
        time.sleep(every)


def kept(out: Path) -> Record:
    """What a record keeps of its run folder, so that a report needs no folder: the learning curve, and what moved
    per layer × group (moved.json without its per-tensor rows; the folder keeps those)."""
    from fpt.moved import MOVED_FILE
    from fpt.results import read_curve

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


def run_local(
    runs: list[Run], runs_dir: Path, sweep_name: str, workers: int, deadline: Deadline | None = None
) -> Iterator[Record]:
    """Records of `runs` as they finish: in this process (workers=1) or in a pool of spawned worker processes."""
    if workers == 1:
        for run in runs:
            yield execute(run, runs_dir, sweep_name, None, deadline)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, placement.available_cores() // workers)
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _init_worker, (threads,))
    try:
        pending = {pool.submit(execute, run, runs_dir, sweep_name, threads, deadline) for run in runs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def start_ray(address: str | None) -> Any:
    """Ray, connected to the cluster at `address` or to a local one started here. A local Ray's workers run at the
    priority of the sweep's own processes: Ray starts them at niceness 15 (RAY_worker_niceness), where beside any other
    busy process a run gets a sliver of a core (a worker's `import fpt.train` took 149 s beside two training runs on 2
    cores, against 10 s). A RAY_worker_niceness the user set is kept."""
    try:
        import ray
    except ImportError:
        raise FPTError("--backend ray needs Ray: pip install 'fpt[ray]'") from None
    if address:
        ray.init(address=address, log_to_driver=False)
        return ray
    before = os.environ.get("RAY_worker_niceness")
    os.environ.setdefault("RAY_worker_niceness", "0")  # read by the raylet ray.init starts
    try:
        ray.init(num_cpus=placement.available_cores(), include_dashboard=False, log_to_driver=False)
    finally:
        if before is None:
            del os.environ["RAY_worker_niceness"]
    return ray


def run_ray(
    runs: list[Run],
    runs_dir: Path,
    sweep_name: str,
    workers: int,
    address: str | None,
    deadline: Deadline | None = None,
) -> Iterator[Record]:
    """Records of `runs` as they finish, each run a Ray task (on the local machine, or the cluster at `address`).
    The runs' folders must be on a file system every node sees for a killed sweep to resume half-done runs."""
    ray = start_ray(address)
    try:
        threads = max(1, int(ray.available_resources().get("CPU", 1)) // workers)
        task = ray.remote(num_cpus=threads)(execute)
        pending = [task.remote(run, str(runs_dir), sweep_name, threads, deadline) for run in runs]
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


def slow_bf16(runs: list[Run]) -> None:
    """Say once, before they train, when runs would compute in bf16 on a CPU that only emulates it (each run's own
    warning goes to its train.log, where nobody reads it before the sweep has taken hours)."""
    from fpt.train import resolve_device

    for precision, device in dict.fromkeys((r.config.precision, r.config.device) for r in runs):
        with contextlib.suppress(FPTError):  # a device not here fails its run, with its error in the record
            if placement.check_precision(precision, resolve_device(device)):
                return


def run_sweep(
    sweep: SweepConfig, options: SweepOptions | None = None, log: Callable[[str], None] | None = None
) -> list[Record]:
    """Run every unfinished run of `sweep`, appending each record to the results file as it finishes; returns the
    records of the sweep's runs (latest per id)."""
    options = options or SweepOptions()
    results, runs_dir = options.results_file(sweep), options.runs_folder(sweep)
    plan = options.plan(sweep)
    total, written = plan.total(), read_records(results)
    runs = plan.now(written)
    done = finished_ids(written, options.retry_failed)
    todo = [r for r in runs if r.run_id not in done]
    others = reusable(options.reuse_files())
    bar = tqdm(
        total=total,
        initial=len(runs) - len(todo),
        desc=sweep.name,
        unit="run",
        disable=options.quiet,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    say = log or (lambda line: bar.write(line, file=sys.stderr))

    def landed(line: str) -> None:
        bar.update()
        say(line)

    later = total - len(runs)
    say(
        f"{sweep.name}: {total} runs, {len(runs) - len(todo)} finished, {len(todo)} to run"
        + (f", {later} waiting for their setting's lr choice" if later else "")
        + f" → {results}"
    )
    slow_bf16(todo)
    started, tried, late = time.perf_counter(), set(), {}
    held: set[str] = set()  # runs another process held when this one came to them: it goes on past them
    deadline = (
        None if options.time_limit is None else Deadline(time.time() + duration_seconds(options.time_limit), results)
    )
    try:
        while todo:  # with lr_selection first-seed, the later seeds' runs appear once their first seed has finished
            todo = copy_reused(todo, others, results, sweep.name, landed)
            batch = [r for r in todo if r.run_id not in held] or todo
            if options.order == "task" and batch:  # the first task (in the sweep's order) with runs left to take
                task = next(label for label in sweep.tasks if any(r.task_label == label for r in batch))
                batch = [r for r in batch if r.task_label == task]
            busy = collect(train_runs(batch, runs_dir, sweep.name, options, deadline), results, late, landed)
            tried |= {r.run_id for r in batch} - busy  # a failed run is not tried again in this call
            held |= busy
            written = read_records(results)
            runs = plan.now(written)
            done = finished_ids(written, options.retry_failed) | tried
            todo = [r for r in runs if r.run_id not in done]
            if todo and {r.run_id for r in todo} <= held:  # only runs other processes hold: wait for one to end
                if deadline is not None and time.time() >= deadline.at:
                    break
                wait_for([runs_dir / r.run_id for r in todo], until=deadline and deadline.at)
                held = set()  # its holder finished it (a record) or died (this process takes it over)
    finally:
        bar.close()
    ours = {r.run_id for r in runs}
    final = [r for r in latest_records(read_records(results)) if r["run_id"] in ours]
    failed = sum(r["status"] == "failed" for r in final)
    say(
        f"{sweep.name}: {len(final)} of {len(runs)} runs finished ({failed} failed) in "
        f"{time.perf_counter() - started:.0f} s → {results}"
    )
    if late := {k: v for k, v in late.items() if k not in {r["run_id"] for r in final}}:
        say(
            f"{sweep.name}: --time-limit {options.time_limit}: {left_for_later(late, deadline.at if deadline else 0.0)}"
        )
    return final


def train_runs(
    runs: list[Run], runs_dir: Path, sweep_name: str, options: SweepOptions, deadline: Deadline | None
) -> Iterator[Record]:
    """Records of `runs` as they finish, on the backend and with the workers `options` name."""
    if options.backend == "ray":
        return run_ray(runs, runs_dir, sweep_name, options.workers, options.ray_address, deadline)
    return run_local(runs, runs_dir, sweep_name, options.workers, deadline)


def copy_reused(
    todo: list[Run],
    others: dict[str, tuple[Path, Record]],
    results: Path,
    sweep_name: str,
    landed: Callable[[str], None],
) -> list[Run]:
    """Append to `results` a copy of each run of `todo` that a --reuse file finished (never tried here), telling
    `landed` of each; returns the runs left to train."""
    for run in (r for r in todo if r.run_id in others):
        source, record = others[run.run_id]
        copy = reused_record(run, sweep_name, source, record)
        if append_record(results, copy, unless_finished=True):
            landed(f"{describe(copy)} [reused from {source}]")
    return [r for r in todo if r.run_id not in others]


def collect(
    records: Iterator[Record], results: Path, late: dict[str, float], landed: Callable[[str], None]
) -> set[str]:
    """Append each finished record to `results` as it comes, telling `landed`, and note in `late` the runs
    --time-limit did not start; returns the ids of the runs another process holds. Shuts the pool or Ray down at
    the end, also when interrupted."""
    busy: set[str] = set()
    try:
        for record in records:
            if record["status"] == BUSY:
                busy.add(record["run_id"])
            elif record["status"] == LATE:
                late[record["run_id"]] = record["needs"]
            elif append_record(results, record, unless_finished=True):
                landed(describe(record))
    finally:
        if hasattr(records, "close"):
            records.close()
    return busy


def default_runs_dir(results: Path) -> Path:
    """results/offline-suite.jsonl → results/offline-suite/ (one folder per run id inside)."""
    return results.with_suffix("")


def dry_run(sweep: SweepConfig, options: SweepOptions | None = None) -> str:
    """The runs of `sweep` (id, done or to do, labels, lr, seed) and their count, as text."""
    options = options or SweepOptions()
    records = read_records(options.results_file(sweep))
    plan = options.plan(sweep)
    runs = plan.now(records)
    latest = {r["run_id"]: r for r in latest_records(records)}
    others = reusable(options.reuse_files())
    lines = []
    copied = 0
    to_run: list[Run] = []
    for run in runs:
        record = latest.get(run.run_id)
        status = "todo" if record is None else "done" if record.get("status") == "ok" else "failed"
        if status == "todo" and run.run_id in others:
            status, copied = "reuse", copied + 1
        elif status == "todo" or (status == "failed" and options.retry_failed):
            to_run.append(run)
        lines.append(
            f"{run.run_id}  {status:6}  {run.task_label}  {run.setting}  lr {run.config.lr:g}  seed {run.config.seed}"
        )
    pairs = {(r.task_label, r.setting, r.config.lr) for r in runs}
    later = plan.total() - len(runs)
    if sweep.lr_selection == "every-seed":
        shape = f"{len(pairs)} (setting, lr) pairs × {len(sweep.seeds)} seeds"
    else:
        shape = f"every lr on seed {sweep.seeds[0]}, the chosen lr on {len(sweep.seeds) - 1} more seeds"
    if sweep.lr_transfer:
        shape += (f"; on {', '.join(sweep.lr_transfer.tasks)} every seed at the lr chosen on "
                  f"{', '.join(sweep.lr_transfer.chosen_on)}")  # fmt: skip
    lines.append(
        f"{sweep.name}: {len(runs) + later} runs ({shape}), {len(plan.settings())} settings; "
        f"{len(runs) - len(to_run) - copied} finished, {len(to_run)} to run"
        + (f", {copied} to copy from --reuse" if copied else "")
        + (f", {later} waiting for their lr choice" if later else "")
    )
    return "\n".join(lines + time_left(to_run, list(latest.values()), here(to_run)))
