"""fpt sweep: expansion, run ids, skipping finished runs, resuming a killed sweep, failures, workers, Ray."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fpt import FPTError, TrainConfig
from fpt.cli import main
from fpt.experiments.plan import Plan, SweepConfig, run_id
from fpt.experiments.records import append_record, read_records
from fpt.experiments.sweep import SweepOptions, run_sweep

train_module = importlib.import_module("fpt.train")  # `fpt.train` the attribute is the function


def tiny_sweep(tiny_bert_dir: str, **overrides) -> dict:
    """Four runs on the tiny BERT, about a second each: bit-xor × {fpt, linear} × 2 lrs (fpt) × seeds."""
    sweep = {
        "name": "tiny",
        "base": {
            "backbone": "bert",
            "backbone_path": tiny_bert_dir,
            "batch_size": 16,
            "steps": 8,
            "eval_every": 4,
            "patience": None,
            "threads": 1,
            "task_args": {"train_size": 64, "val_size": 32, "test_size": 32},
        },
        "tasks": {"xor": {"task": "bit-xor"}},
        "models": {"fpt": {"model": "fpt", "lr": [1e-3, 1e-2]}, "linear": {"model": "linear"}},
        "lr": 1e-3,
        "seeds": [0, 1],
    }
    return {**sweep, **overrides}


def write_sweep(path: Path, sweep: dict) -> Path:
    path.write_text(yaml.safe_dump(sweep))
    return path


def comparable(records: list[dict]) -> dict[str, dict]:
    """What must not depend on how the sweep was run: metrics and the learning curve (not seconds), by run id."""
    keys = ("status", "task_label", "model_label", "seed", "lr", "val_accuracy", "val_loss", "test_accuracy",
            "test_loss", "best_step", "steps_run")  # fmt: skip
    return {
        r["run_id"]: {
            **{k: r.get(k) for k in keys},
            "curve": [{k: v for k, v in row.items() if k != "train_seconds"} for row in r.get("curve", [])],
        }
        for r in records
    }


def test_expansion_order_labels_and_axes(tiny_bert_dir):
    sweep = SweepConfig(**tiny_sweep(tiny_bert_dir, models={"fpt": {"train": ["output", "input,output"]}}))
    runs = Plan.of(sweep).now([])
    assert len(runs) == 2 * 2  # seeds × train axis (one lr)
    assert [r.config.seed for r in runs] == [0, 0, 1, 1]  # seeds outermost
    assert [r.axes for r in runs[:2]] == [{"train": "output"}, {"train": "input,output"}]
    assert runs[0].setting == "fpt (train=output)" and runs[0].task_label == "xor"
    assert runs[0].config.steps == 8 and runs[0].config.backbone == "bert"

    runs = Plan.of(SweepConfig(**tiny_sweep(tiny_bert_dir))).now([])
    assert len(runs) == 2 * (2 + 1)  # seeds × (fpt: 2 lrs + linear: 1 lr)
    assert sorted({r.config.lr for r in runs if r.model_label == "fpt"}) == [1e-3, 1e-2]
    assert all(r.axes == {} for r in runs)  # lr is the selection axis, not a setting axis
    assert len({r.run_id for r in runs}) == len(runs)


def test_exclude_drops_the_pairs_it_matches(tiny_bert_dir):
    """`exclude` as in CI matrices: a rule drops the task × model pairs its labels match (a key left out: all)."""
    sweep = tiny_sweep(tiny_bert_dir, tasks={"xor": {"task": "bit-xor"}, "digits": {"task": "digits", "task_args": {}}})

    def pairs(rules):
        return {(r.task_label, r.model_label) for r in Plan.of(SweepConfig(**{**sweep, "exclude": rules})).now([])}

    every = {("xor", "fpt"), ("xor", "linear"), ("digits", "fpt"), ("digits", "linear")}
    assert pairs([]) == every
    assert pairs([{"task": "digits", "model": "linear"}]) == every - {("digits", "linear")}
    assert pairs([{"model": ["linear"]}, {"task": "xor", "model": "fpt"}]) == {("digits", "fpt")}


def test_tasks_and_models_options_run_a_part_with_the_whole_sweeps_ids(tiny_bert_dir):
    """--tasks / --models narrow a sweep to some labels: the same runs (same ids) the whole sweep lists for them, and
    an unknown label is a one-line error naming the labels there are."""
    from fpt.experiments.sweep import dry_run

    sweep = SweepConfig(**tiny_sweep(tiny_bert_dir, tasks={"xor": {"task": "bit-xor"}, "digits": {"task": "digits"}}))
    whole = {(r.task_label, r.model_label): r.run_id for r in Plan.of(sweep).now([])}
    some = Plan.of(sweep, tasks="digits", models=" linear,").now([])
    assert {(r.task_label, r.model_label): r.run_id for r in some} == {
        k: v for k, v in whole.items() if k == ("digits", "linear")
    }
    assert {(r.task_label, r.model_label) for r in Plan.of(sweep, models="fpt").now([])} == {
        ("xor", "fpt"),
        ("digits", "fpt"),
    }
    assert "1 settings" in dry_run(sweep, SweepOptions(tasks="xor", models="fpt"))
    with pytest.raises(FPTError, match="--tasks: no task labelled 'mnist'; the tasks of sweep .* are: xor, digits"):
        Plan.of(sweep, tasks="xor,mnist")


def test_run_ids_are_stable_and_distinct():
    base = TrainConfig(task="digits", lr=1e-3, task_args={"patch": 2, "split_seed": 0})
    same = [
        TrainConfig(task_args={"split_seed": 0, "patch": 2}, lr="1e-3", task="digits"),  # key order, YAML spelling
        TrainConfig(task="digits", lr=0.001, task_args={"patch": 2, "split_seed": 0}, init="pretrained"),  # defaults
        base.model_copy(update={"threads": 4, "device": "cpu"}),  # placement fields do not change the numbers
    ]
    assert {run_id(c) for c in same} == {run_id(base)}
    assert len(run_id(base)) == 12
    different = [
        base.model_copy(update={"lr": 3e-4}),
        base.model_copy(update={"seed": 1}),
        base.model_copy(update={"init": "random"}),
        base.model_copy(update={"task_args": {"patch": 4, "split_seed": 0}}),
        base.model_copy(update={"steps": 100}),
    ]
    assert len({run_id(c) for c in [base, *different]}) == 1 + len(different)
    assert run_id(base) == "ffb7581ddd38"  # ids of committed sweeps and half-done runs stay what they were


def test_a_field_added_later_keeps_earlier_run_ids(monkeypatch):
    """A field outside FIRST_FIELDS names a run only when set away from its default: as if `compile` were new, the
    id of a run that leaves it at its default equals the id of the same config made before the field existed."""
    import fpt.config
    from fpt.shipping.checkpoint import config_differences

    cfg = TrainConfig(task="digits")
    before = {k: v for k, v in cfg.model_dump(mode="json").items() if k != "compile"}  # a checkpoint without it
    monkeypatch.setattr(fpt.config, "FIRST_FIELDS", tuple(f for f in fpt.config.FIRST_FIELDS if f != "compile"))
    assert fpt.config.identity(cfg.model_dump(mode="json")) == fpt.config.identity(before)
    assert config_differences(before, cfg.model_dump(mode="json")) == []
    assert run_id(cfg.model_copy(update={"compile": True})) != run_id(cfg)
    assert config_differences(before, cfg.model_copy(update={"compile": True}).model_dump(mode="json"))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"models": {"lstm": {"model": "lstm", "learning_rate": 1}}},
            "models.lstm: unknown config key 'learning_rate'",
        ),
        ({"tasks": {"xor": {"task": "bit-xor", "seed": 3}}}, "tasks.xor: seed is set by the sweep's seeds"),
        ({"tasks": {"xor": {"task": "nope"}}}, "tasks.xor × models.fpt: unknown task 'nope'"),
        ({"models": {"fpt": {"lr": -1}}}, "tasks.xor × models.fpt: lr: Input should be greater than 0"),
        (
            {"models": {"lstm": {"model": "lstm", "train": "output"}}},
            "× models.lstm: config: model 'lstm' trains every",
        ),
        ({"models": {"fpt": {"init": []}}}, "models.fpt: init is an empty list"),
        ({"base": {"lr": 1e-3}}, "lr is given both at the top level and in base"),
        ({"models": {"a": {}, "b": {}}}, "have the same config"),
        ({"seeds": []}, "seeds: List should have at least 1 item"),
        ({"grid": {}}, "unknown sweep key 'grid'"),
        ({"exclude": [{"model": "lstm"}]}, "exclude[0].model: no model labelled 'lstm'; the models are: fpt"),
        ({"exclude": [{"data": "xor"}]}, "exclude[0].data: Input should be 'task' or 'model' (got 'data')"),
    ],
)
def test_bad_sweep_is_one_line_naming_the_entry(tiny_bert_dir, tmp_path, capsys, change, message):
    path = write_sweep(tmp_path / "bad.yaml", {**tiny_sweep(tiny_bert_dir, models={"fpt": {}}), **change})
    assert main(["sweep", str(path), "--results", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "r.jsonl").exists()  # validated before anything ran


def test_sweep_writes_records_and_skips_finished_runs(tiny_bert_dir, tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    sweep = SweepConfig(**tiny_sweep(tiny_bert_dir))
    records = run_sweep(sweep, SweepOptions(results=results, quiet=True))
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    first = read_records(results)
    assert len(first) == 6 and {r["run_id"] for r in first} == {r.run_id for r in Plan.of(sweep).now([])}
    r = first[0]
    assert r["sweep"] == "tiny" and r["task_label"] == "xor" and r["axes"] == {}
    assert [row["step"] for row in r["curve"]] == [4, 8] and "test_accuracy" in r and "environment" in r
    assert (tmp_path / "results" / r["run_id"] / "result.json").is_file()  # runs dir: the results path minus .jsonl

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train", must_not_train)
    assert len(run_sweep(sweep, SweepOptions(results=results, quiet=True))) == 6
    assert read_records(results) == first  # nothing appended

    # A run that finished but whose record never reached the file (killed in between) is not trained again.
    results.write_text("".join(json.dumps(r) + "\n" for r in first[:-1]))
    run_sweep(sweep, SweepOptions(results=results, quiet=True))
    assert comparable(read_records(results)) == comparable(first)

    # A new seed runs only the new runs.
    monkeypatch.undo()
    more = SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[0, 1, 2]))
    assert len(run_sweep(more, SweepOptions(results=results, quiet=True))) == 9 and len(read_records(results)) == 9


def test_partial_last_line_is_ignored_and_repaired(tiny_bert_dir, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    sweep = SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[0]))
    run_sweep(sweep, SweepOptions(results=results, quiet=True))
    whole = read_records(results)
    cut = results.read_text().splitlines(keepends=True)
    results.write_text("".join(cut[:-1]) + cut[-1][: len(cut[-1]) // 2])  # the last write cut short by a crash
    assert read_records(results) == whole[:-1]
    assert "unfinished last line" in capsys.readouterr().err
    run_sweep(sweep, SweepOptions(results=results, quiet=True))  # reruns the lost run and repairs the file
    lines = results.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert comparable(read_records(results)) == comparable(whole)

    append_record(results, {"run_id": "x"})
    results.write_text(results.read_text() + "not json\n")
    with pytest.raises(FPTError, match=r"results.jsonl:5: not a JSON record"):
        read_records(results)


def test_failed_run_is_recorded_and_does_not_stop_the_sweep(tiny_bert_dir, tmp_path, monkeypatch):
    real_train = train_module.train

    def diverges_at_high_lr(cfg, **kwargs):
        if cfg.lr > 5e-3:
            raise FPTError(f"training loss became nan at step 3 (lr {cfg.lr})")
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", diverges_at_high_lr)
    results = tmp_path / "results.jsonl"
    sweep = SweepConfig(**tiny_sweep(tiny_bert_dir))
    records = run_sweep(sweep, SweepOptions(results=results, quiet=True))
    failed = [r for r in records if r["status"] == "failed"]
    assert len(records) == 6 and len(failed) == 2
    assert all(r["lr"] == 1e-2 and "loss became nan" in r["error"] and r["model"] == "fpt" for r in failed)
    assert "fpt: run failed" in (tmp_path / "results" / failed[0]["run_id"] / "train.log").read_text()
    run_sweep(sweep, SweepOptions(results=results, quiet=True))
    assert len(read_records(results)) == 6  # failed runs count as finished

    monkeypatch.undo()
    records = run_sweep(sweep, SweepOptions(results=results, retry_failed=True, quiet=True))
    assert len(read_records(results)) == 8 and all(r["status"] == "ok" for r in records)  # the retry's record wins


def sweep_cmd(path: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fpt", "sweep", str(path), "--results", str(results), "--quiet", *extra]


def test_killed_sweep_resumes_and_equals_an_unbroken_one(tiny_bert_dir, tmp_path):
    """SIGKILL the sweep while a run is half-done (its checkpoint written) and others have finished; running it again
    trains only what is missing, resumes the half-done run, and ends with an unbroken sweep's records."""
    spec = tiny_sweep(tiny_bert_dir, seeds=[0, 1, 2])
    spec["base"] |= {"steps": 40, "eval_every": 4}
    path = write_sweep(tmp_path / "sweep.yaml", spec)
    killed = tmp_path / "killed.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(sweep_cmd(path, killed), env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    half_done = None
    deadline = time.monotonic() + 120
    while half_done is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        proc.send_signal(signal.SIGSTOP)  # look at a frozen sweep: no race between looking and killing
        finished = {r["run_id"] for r in read_records(killed)}
        half_done = next(
            (
                p.parent.name
                for p in tmp_path.glob("killed/*/checkpoint.safetensors")
                if p.parent.name not in finished and not (p.parent / "result.json").exists()
            ),
            None,
        )
        proc.send_signal(signal.SIGKILL if finished and half_done else signal.SIGCONT)
        if not finished:
            half_done = None
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed mid-way"
    before = read_records(killed)
    assert 1 <= len(before) < 9

    assert main(["sweep", str(path), "--results", str(killed), "--quiet"]) == 0
    after = read_records(killed)
    assert after[: len(before)] == before and len(after) == 9 == len({r["run_id"] for r in after})  # none redone
    assert next(r for r in after if r["run_id"] == half_done)["resumed"] is True

    unbroken = tmp_path / "unbroken.jsonl"
    assert main(["sweep", str(path), "--results", str(unbroken), "--quiet"]) == 0
    assert comparable(after) == comparable(read_records(unbroken))


def test_two_sweep_processes_over_one_config_train_and_write_each_run_once(tiny_bert_dir, tmp_path):
    """Two `fpt sweep` commands started together on one config, results file and runs folder share the runs: the file
    ends with each run's record once (no run trained twice), and the records equal one process's."""
    spec = tiny_sweep(tiny_bert_dir, seeds=[0, 1, 2])
    spec["base"] |= {"steps": 40, "eval_every": 4}
    path = write_sweep(tmp_path / "sweep.yaml", spec)
    shared = tmp_path / "shared.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    procs = [subprocess.Popen(sweep_cmd(path, shared), env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], logs
    records = read_records(shared)
    assert len(records) == 9 == len({r["run_id"] for r in records}) and all(r["status"] == "ok" for r in records)
    trained = [log.count(" seed ") for log in logs]  # one line per run a process wrote
    assert sum(trained) == 9, logs

    alone = tmp_path / "alone.jsonl"
    assert main(["sweep", str(path), "--results", str(alone), "--quiet"]) == 0
    assert comparable(records) == comparable(read_records(alone))


def test_a_run_another_process_holds_is_left_to_it(tiny_bert_dir, tmp_path, monkeypatch):
    """execute() does not touch a run whose folder lock another process holds; append_record(unless_finished=True)
    writes nothing for a run the file already holds finished."""
    import fcntl

    from fpt.experiments import sweep as sweep_module

    run = Plan.of(SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[0]))).now([])[0]
    folder = tmp_path / "runs" / run.run_id
    folder.mkdir(parents=True)
    with open(folder / sweep_module.RUN_LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sweep_module.execute(run, tmp_path / "runs", "tiny") == {"run_id": run.run_id, "status": "busy"}
    assert not (folder / "train.log").exists()
    record = sweep_module.execute(run, tmp_path / "runs", "tiny")
    assert record["status"] == "ok" and (folder / "result.json").is_file()

    results = tmp_path / "results.jsonl"
    assert append_record(results, {**record, "status": "failed"}, unless_finished=True)  # a failed one is retried
    assert append_record(results, record, unless_finished=True)
    assert not append_record(results, record, unless_finished=True)
    assert len(read_records(results)) == 2


def test_two_workers_give_the_same_records(tiny_bert_dir, tmp_path):
    sweep = SweepConfig(**tiny_sweep(tiny_bert_dir))
    one = run_sweep(sweep, SweepOptions(results=tmp_path / "one.jsonl", quiet=True))
    two = run_sweep(sweep, SweepOptions(results=tmp_path / "two.jsonl", workers=2, quiet=True))
    assert comparable(two) == comparable(one)


def test_ray_backend_writes_the_same_records(tiny_bert_dir, tmp_path):
    pytest.importorskip("ray")
    sweep = SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[0]))
    local = run_sweep(sweep, SweepOptions(results=tmp_path / "local.jsonl", quiet=True))
    ray = run_sweep(sweep, SweepOptions(results=tmp_path / "ray.jsonl", workers=2, backend="ray", quiet=True))
    assert comparable(ray) == comparable(local)
    assert len(read_records(tmp_path / "ray.jsonl")) == 3


def test_a_local_ray_runs_its_workers_at_the_sweeps_own_priority(monkeypatch):
    """Ray starts workers at niceness 15, starved beside any busy process; fpt's local Ray starts them at the sweep's
    own niceness and leaves the environment as it found it."""
    pytest.importorskip("ray")
    import os

    from fpt.experiments.sweep import start_ray

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    ray = start_ray(None)
    try:
        assert "RAY_worker_niceness" not in os.environ
        assert ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote()) == os.nice(0)
    finally:
        ray.shutdown()


def test_reuse_copies_another_sweeps_run_of_the_same_config(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """A run whose config another sweep already trained (same run id) is copied from that sweep's results file,
    under this sweep's name and labels, and not trained again; the rest trains."""
    first = tmp_path / "first.jsonl"
    run_sweep(SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[0])), SweepOptions(results=first, quiet=True))
    other = tiny_sweep(tiny_bert_dir, name="other", seeds=[0], models={"frozen": {"model": "fpt", "lr": 1e-3},
                                                                       "mlp": {"model": "mlp"}})  # fmt: skip
    path = write_sweep(tmp_path / "other.yaml", other)
    results = tmp_path / "other.jsonl"
    assert main(["sweep", str(path), "--results", str(results), "--reuse", str(first), "--dry-run"]) == 0
    assert "1 to run, 1 to copy from --reuse" in capsys.readouterr().out
    trained = []
    real_train = train_module.train
    monkeypatch.setattr(train_module, "train", lambda cfg, **kw: trained.append(cfg.model) or real_train(cfg, **kw))
    records = run_sweep(SweepConfig(**other), SweepOptions(results=results, reuse=str(first), quiet=True))
    assert trained == ["mlp"]  # the fpt run at lr 1e-3, seed 0 is the first sweep's
    (copied,) = [r for r in records if r["model_label"] == "frozen"]
    (source,) = [r for r in read_records(first) if r["run_id"] == copied["run_id"]]
    assert copied["sweep"] == "other" and copied["reused_from"] == {"results": str(first), "sweep": "tiny"}
    assert comparable([copied])[copied["run_id"]] == {**comparable([source])[source["run_id"]], "model_label": "frozen"}
    assert not (tmp_path / "other" / copied["run_id"]).exists()
    assert copied["moved"]["cells"] and "tensors" not in copied["moved"]  # what moved travels in the record
    from fpt.experiments.report import ReportOptions, write_report

    options = ReportOptions(out=tmp_path / "report", runs_dir=tmp_path / "no-folders", attention=False)
    moved = write_report([results], options).read_text().split("## What moved")[1]  # from the records, no folder
    assert "| xor | frozen |" in moved and "| xor | mlp |" in moved

    # A record from before records held what moved is not reused: the run trains again.
    bare = [{k: v for k, v in r.items() if k != "moved"} for r in read_records(first)]
    first.write_text("".join(json.dumps(r) + "\n" for r in bare))
    trained.clear()
    run_sweep(SweepConfig(**other), SweepOptions(results=tmp_path / "again.jsonl", reuse=str(first), quiet=True))
    assert sorted(trained) == ["fpt", "mlp"]
    with pytest.raises(FPTError, match="--reuse: no results file"):
        run_sweep(SweepConfig(**other), SweepOptions(results=results, reuse=str(tmp_path / "none.jsonl")))


def test_dry_run_lists_runs_and_counts(tiny_bert_dir, tmp_path, capsys):
    path = write_sweep(tmp_path / "sweep.yaml", tiny_sweep(tiny_bert_dir))
    results = tmp_path / "r.jsonl"
    assert main(["sweep", str(path), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 6 runs" in out and "0 finished, 6 to run" in out and out.count("  todo  ") == 6
    assert not results.exists()
    run_sweep(SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[0])), SweepOptions(results=results, quiet=True))
    assert main(["sweep", str(path), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 finished, 3 to run" in out and out.count("  done  ") == 3
    seconds = sum(r["wall_seconds"] for r in read_records(results))  # seed 1's runs: seed 0's task × model pairs
    assert out.splitlines()[-1] == (
        f"time left: about {seconds:.0f} s one run at a time for the 3 runs to run whose task has finished runs on "
        "their backbone (each at its task and model's mean: wall time where records hold it, else training time alone)"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("1d12h", 129600), ("1:30", 5400), ("0:01:05", 65)],
)
def test_time_limit_reads_durations(text, seconds):
    from fpt.experiments.budget import duration_seconds

    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("value", ["90", "2 hours", "1:75", "0m"])
def test_a_bad_time_limit_is_one_line_naming_the_option(tiny_bert_dir, tmp_path, capsys, value):
    path = write_sweep(tmp_path / "sweep.yaml", tiny_sweep(tiny_bert_dir))
    assert main(["sweep", str(path), "--results", str(tmp_path / "r.jsonl"), "--time-limit", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fpt: error: --time-limit") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.jsonl").exists()


def test_time_limit_starts_only_the_runs_expected_to_fit(tiny_bert_dir, tmp_path, capsys):
    """Under --time-limit a run starts only if its task × model's mean wall time (less a checkpoint's share) fits in
    the time left; the others stay to do, and the same command continues them."""
    from fpt.experiments.budget import Deadline, estimate, mean_seconds, seconds_left, time_left
    from fpt.experiments.sweep import execute
    from fpt.shipping.checkpoint import CHECKPOINT_FILE, CHECKPOINT_FORMAT
    from fpt.shipping.patch import save_safetensors

    path = write_sweep(tmp_path / "sweep.yaml", tiny_sweep(tiny_bert_dir))
    results = tmp_path / "r.jsonl"
    run_sweep(SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[0])), SweepOptions(results=results, quiet=True))
    first = read_records(results)
    assert all(r["wall_seconds"] >= r["train_seconds"] > 0 and r["resumed"] is False for r in first)
    # As if an fpt run took 20 min and a linear one 1 min: only seed 1's linear run fits in 10 min.
    timed = [{**r, "wall_seconds": 1200.0 if r["model_label"] == "fpt" else 60.0} for r in first]
    results.write_text("".join(json.dumps(r) + "\n" for r in timed))
    assert mean_seconds(timed) == {("xor", "bert", "fpt"): 1200.0, ("xor", "bert", "linear"): 60.0}
    assert mean_seconds([{**r, "resumed": True} for r in timed]) == {  # a resumed run's wall time is a part
        ("xor", "bert", r["model_label"]): r["train_seconds"] for r in timed if r["model_label"] == "linear"
    } | {("xor", "bert", "fpt"): sum(r["train_seconds"] for r in timed if r["model_label"] == "fpt") / 2}

    assert main(["sweep", str(path), "--results", str(results), "--quiet", "--time-limit", "10m"]) == 0
    err = capsys.readouterr().err
    new = read_records(results)[len(first) :]
    assert [(r["model_label"], r["seed"]) for r in new] == [("linear", 1)]
    assert (
        "tiny: --time-limit 10m: 2 runs not started, expected to outlast the 10 min left (the shortest needs "
        "20 min); the same command continues them"
    ) in err
    assert main(["sweep", str(path), "--results", str(results), "--quiet", "--time-limit", "1h"]) == 0
    assert len(read_records(results)) == 6 and "not started" not in capsys.readouterr().err

    # The part a half-done run has left: its checkpoint's share of the steps; nothing is known without an estimate.
    folder = tmp_path / "half"
    folder.mkdir()
    save_safetensors(folder / CHECKPOINT_FILE, {}, {"format": CHECKPOINT_FORMAT, "step": 6, "config": {"steps": 8}})
    assert seconds_left(folder, 1200.0) == 300.0 and seconds_left(folder, None) == 0.0
    assert seconds_left(tmp_path / "none", 1200.0) == 1200.0
    # The estimate is read from the results file as the run is about to start, so runs finished meanwhile count.
    run = Plan.of(SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[2]))).now([])[0]
    assert (run.task_label, run.model_label) == ("xor", "fpt")
    late = execute(run, tmp_path / "runs", "tiny", deadline=Deadline(time.time() + 600, results))
    assert late["status"] == "late" and 500 < late["needs"] < 700  # fpt: two runs of 1200 s, two of ~0 s
    # Once the time is up, no run starts, known or not; an unknown one starts while any time is left.
    empty = tmp_path / "empty.jsonl"
    late = execute(run, tmp_path / "runs", "tiny", deadline=Deadline(time.time() - 1, empty))
    assert late == {"run_id": run.run_id, "status": "late", "needs": 0.0}
    assert not (tmp_path / "runs" / run.run_id / "train.log").exists()
    assert execute(run, tmp_path / "runs", "tiny", deadline=Deadline(time.time() + 600, empty))["status"] == "ok"
    # Before its model has finished a run on the task, a run is taken at the slowest mean of the task's models on its
    # backbone; another backbone's or another task's times are no estimate.
    linear = tmp_path / "linear.jsonl"
    linear.write_text("".join(json.dumps(r) + "\n" for r in timed if r["model_label"] == "linear"))
    assert estimate(run, mean_seconds(read_records(linear))) == 60.0
    assert estimate(run, {("other", "bert", "fpt"): 9.0, ("xor", "smollm2", "lora"): 9.0}) is None
    assert estimate(run, {("xor", "smollm2", "lora"): 2880.0, ("xor", "bert", "lora"): 9.0}) == 9.0
    again = Plan.of(SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[3]))).now([])[0]
    late = execute(again, tmp_path / "runs", "tiny", deadline=Deadline(time.time() + 30, linear))
    assert late == {"run_id": again.run_id, "status": "late", "needs": 60.0}
    (line,) = time_left([again], read_records(linear))
    assert line == (
        "time left: about 1 min one run at a time for the 1 run to run whose task has finished runs on their backbone "
        "(each at its task and model's mean: wall time where records hold it, else training time alone; 1 whose model "
        "has none on the task yet at its slowest model's)"
    )


def test_first_seed_lr_selection_runs_later_seeds_at_the_chosen_lr(tiny_bert_dir, tmp_path, capsys):
    """lr_selection first-seed: every lr runs seed 0; seeds 1 and 2 run only the lr that seed 0's validation chose,
    by the rule `fpt report` uses, so the report chooses the same lr (on the seed every lr ran)."""
    from fpt.experiments.settings import select

    sweep_dict = tiny_sweep(tiny_bert_dir, seeds=[0, 1, 2], lr_selection="first-seed")
    sweep_dict["models"]["fpt"]["lr"] = [1e-1, 1e-3]  # 1e-1 does far worse on this tiny task
    path = write_sweep(tmp_path / "sweep.yaml", sweep_dict)
    results = tmp_path / "r.jsonl"
    assert main(["sweep", str(path), "--results", str(results), "--dry-run"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("tiny: 7 runs (every lr on seed 0, the chosen lr on 2 more seeds)")
    assert last.endswith("0 finished, 3 to run, 4 waiting for their lr choice")  # 3 seed-0 runs; 2 settings × 2 seeds

    records = run_sweep(SweepConfig(**sweep_dict), SweepOptions(results=results, quiet=True))
    assert len(records) == 7 and all(r["status"] == "ok" for r in records)
    fpt_runs = [r for r in records if r["model_label"] == "fpt"]
    first = {r["lr"]: r["val_accuracy"] for r in fpt_runs if r["seed"] == 0}
    chosen = max(sorted(first), key=lambda lr: first[lr])  # ties: the smaller lr
    assert {r["lr"] for r in fpt_runs if r["seed"] > 0} == {chosen}
    assert sorted(r["seed"] for r in fpt_runs if r["lr"] == chosen) == [0, 1, 2]
    (fpt_setting,) = [s for s in select(records) if s.label == "fpt"]
    assert fpt_setting.lr == chosen and len(fpt_setting.ok) == 3
    assert main(["sweep", str(path), "--results", str(results), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("7 finished, 0 to run")


def test_task_order_finishes_each_task_with_its_later_seeds_before_the_next(tiny_bert_dir, tmp_path):
    """--order task: one task at a time, its later seeds (at the lr its first seed chose) before the next task's
    first seed; the default order runs every task's first seed first. Same runs, same ids either way."""
    sweep_dict = tiny_sweep(tiny_bert_dir, seeds=[0, 1], lr_selection="first-seed")
    sweep_dict["tasks"] = {"xor": {"task": "bit-xor"}, "xor-again": {"task": "bit-xor", "steps": 6}}
    sweep_dict["models"] = {"linear": {"model": "linear", "lr": [1e-3, 1e-2]}}
    path = write_sweep(tmp_path / "sweep.yaml", sweep_dict)
    order = {}
    for how in ("seed", "task"):
        results = tmp_path / f"{how}.jsonl"
        assert main(["sweep", str(path), "--results", str(results), "--quiet", "--order", how]) == 0
        order[how] = [(r["task_label"], r["seed"]) for r in read_records(results)]
    assert order["task"] == [("xor", 0), ("xor", 0), ("xor", 1), ("xor-again", 0), ("xor-again", 0), ("xor-again", 1)]
    assert order["seed"] == [("xor", 0), ("xor", 0), ("xor-again", 0), ("xor-again", 0), ("xor", 1), ("xor-again", 1)]
    ids = {how: sorted(r["run_id"] for r in read_records(tmp_path / f"{how}.jsonl")) for how in order}
    assert ids["seed"] == ids["task"]


def test_task_order_goes_on_past_the_runs_another_process_holds(tiny_bert_dir, tmp_path):
    """--order task: while another process holds the first task's last run, the sweep trains the next task's runs
    instead of waiting, and takes the held run over once its holder lets it go without a record (it died)."""
    import fcntl
    import threading

    from fpt.experiments import sweep as sweep_module

    sweep_dict = tiny_sweep(tiny_bert_dir, seeds=[0])
    sweep_dict["tasks"] = {"xor": {"task": "bit-xor"}, "xor-again": {"task": "bit-xor", "steps": 6}}
    sweep_dict["models"] = {"linear": {"model": "linear"}}
    path = write_sweep(tmp_path / "sweep.yaml", sweep_dict)
    (first,) = [r for r in Plan.of(SweepConfig(**sweep_dict)).now([]) if r.task_label == "xor"]
    results, runs_dir = tmp_path / "results.jsonl", tmp_path / "runs"
    (runs_dir / first.run_id).mkdir(parents=True)
    held = open(runs_dir / first.run_id / sweep_module.RUN_LOCK, "a")  # noqa: SIM115 (closed by the other thread)
    fcntl.flock(held, fcntl.LOCK_EX)

    def holder() -> None:  # the other process: dies once the next task's run is written (or after 30 s)
        until = time.time() + 30
        while time.time() < until and not (results.is_file() and read_records(results)):
            time.sleep(0.05)
        held.close()

    other = threading.Thread(target=holder)
    other.start()
    try:
        assert main(["sweep", str(path), "--results", str(results), "--runs-dir", str(runs_dir), "--quiet",
                     "--order", "task"]) == 0  # fmt: skip
    finally:
        other.join()
    assert [r["task_label"] for r in read_records(results)] == ["xor-again", "xor"]


def test_lr_transfer_runs_costly_tasks_at_the_lr_chosen_on_cheap_ones(tiny_bert_dir, tmp_path, capsys):
    """lr_transfer: the grid runs on `chosen_on`; on `tasks` every seed runs at the lr the setting chose there, listed
    once that choice is made (and --tasks on a carried task alone waits for it, the choice being the whole sweep's)."""
    from fpt.experiments.settings import select

    sweep_dict = tiny_sweep(tiny_bert_dir, seeds=[0, 1], lr_selection="first-seed")
    sweep_dict["tasks"] = {"xor": {"task": "bit-xor"}, "xor-long": {"task": "bit-xor", "steps": 12}}
    sweep_dict["models"]["fpt"]["lr"] = [1e-1, 1e-3]  # 1e-1 does far worse on this tiny task
    sweep_dict["lr_transfer"] = {"chosen_on": ["xor"], "tasks": ["xor-long"]}
    path = write_sweep(tmp_path / "sweep.yaml", sweep_dict)
    results = tmp_path / "r.jsonl"
    assert main(["sweep", str(path), "--results", str(results), "--dry-run"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "every seed at the lr chosen on xor" in last  # xor: 2 + 1 first-seed runs, 2 later; xor-long: 2 × 2 seeds
    assert last.startswith("tiny: 9 runs (") and last.endswith("0 finished, 3 to run, 6 waiting for their lr choice")
    assert main(["sweep", str(path), "--results", str(results), "--tasks", "xor-long", "--quiet"]) == 0
    assert "0 finished, 0 to run, 4 waiting for their setting's lr choice" in capsys.readouterr().err
    assert not results.exists()

    records = run_sweep(SweepConfig(**sweep_dict), SweepOptions(results=results, quiet=True))
    assert len(records) == 9 and all(r["status"] == "ok" for r in records)
    chosen = {s.label: s.lr for s in select(records) if s.task == "xor"}
    carried = {(r["model_label"], r["lr"], r["seed"]) for r in records if r["task_label"] == "xor-long"}
    assert carried == {(m, chosen[m], seed) for m in ("fpt", "linear") for seed in (0, 1)}
    assert chosen["fpt"] == 1e-3 and {r["steps"] for r in records if r["task_label"] == "xor-long"} == {12}
    assert all(r.get("lr_chosen_on") == (["xor"] if r["task_label"] == "xor-long" else None) for r in records)
    report = tmp_path / "report"
    assert main(["report", str(results), "--out", str(report), "--no-attention"]) == 0
    text = (report / "report.md").read_text()
    assert "*lr carried*: the lr was not searched on this task" in text
    assert text.split("## Table 1")[1].split("##")[0].count("lr carried") == 2  # xor-long × fpt, linear


def test_lr_transfer_takes_the_lr_chosen_most_often_and_names_bad_labels(tiny_bert_dir):
    """The carried lr is the one most `chosen_on` tasks chose (a tie: the earliest listed task's); a setting waits
    until every one of them has chosen; a label that is no task, or a task on both sides, is a one-line error."""
    sweep_dict = tiny_sweep(tiny_bert_dir, seeds=[0], models={"fpt": {"model": "fpt", "lr": [1e-3, 1e-2]}})
    sweep_dict["tasks"] = {label: {"task": "bit-xor", "steps": steps} for label, steps in
                           (("a", 8), ("b", 9), ("c", 10), ("costly", 11))}  # fmt: skip

    def carried(chosen_on: list[str], best: dict[str, float]) -> set[float]:
        sweep = SweepConfig(**{**sweep_dict, "lr_transfer": {"chosen_on": chosen_on, "tasks": ["costly"]}})
        records = [{"run_id": r.run_id, "status": "ok", "val_accuracy": 1.0 if r.config.lr == best[r.task_label]
                    else 0.5} for r in Plan.of(sweep).now([]) if r.task_label in best]  # fmt: skip
        return {r.config.lr for r in Plan.of(sweep).now(records) if r.task_label == "costly"}

    assert carried(["a", "b", "c"], {"a": 1e-2, "b": 1e-3, "c": 1e-3}) == {1e-3}  # two of three
    assert carried(["a", "b"], {"a": 1e-2, "b": 1e-3}) == {1e-2}  # a tie: a's, listed first
    assert carried(["b", "a"], {"a": 1e-2, "b": 1e-3}) == {1e-3}
    assert carried(["a", "b"], {"a": 1e-2}) == set()  # b has not chosen yet
    for transfer, message in (
        ({"chosen_on": ["a", "nope"], "tasks": ["costly"]}, "lr_transfer.chosen_on: no task labelled 'nope'"),
        ({"chosen_on": ["a", "costly"], "tasks": ["costly"]}, "task 'costly' is both in chosen_on and in tasks"),
    ):
        with pytest.raises(FPTError, match=message):
            Plan.of(SweepConfig(**{**sweep_dict, "lr_transfer": transfer}))
    lonely = {**sweep_dict, "exclude": [{"task": "a", "model": "fpt"}]}
    with pytest.raises(FPTError, match="'fpt' runs on 'costly' but on none of chosen_on \\(a\\)"):
        Plan.of(SweepConfig(**{**lonely, "lr_transfer": {"chosen_on": ["a"], "tasks": ["costly"]}})).now([])


@pytest.mark.parametrize(
    "name, runs",
    [("offline-suite", 210), ("paper-suite", 567), ("methods-comparison", 328), ("ts-recipe", 16), ("ts-suite", 446),
     ("ts-suite-smollm2", 30), ("precision-check", 40), ("ts-tokens-probe", 4), ("methods-positions", 16),
     ("methods-lower-lr", 22)],
)  # fmt: skip
def test_shipped_sweeps_expand(name, runs, capsys):
    """The shipped sweep files validate and expand (a dry run reads no data)."""
    config = Path(__file__).parents[1] / "configs" / f"{name}.yaml"
    assert main(["sweep", str(config), "--results", "/nonexistent/r.jsonl", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{name}: {runs} runs (")


def test_time_estimates_follow_the_machine_kind_the_run_trains_on(tiny_bert_dir):
    """A results file gathered on several machine kinds: a run's expected time on this kind is its task × model's own
    mean here where it has one, else the other kinds' mean scaled by how much slower this kind ran the keys both ran."""
    import dataclasses

    import torch

    from fpt.experiments.budget import here, kind_here, kind_of, mean_seconds, speed_factor, time_left
    from fpt.results import cpu_model, cpu_name

    def hw(cpu: str) -> dict:
        return {"environment": {"hardware": {"cpu": cpu, "cpu_model": "family 23 model 1 stepping 1"}}}

    def record(run_id: str, model: str, seconds: float, cpu: str) -> dict:
        return {"run_id": run_id, "status": "ok", "task_label": "xor", "backbone": "bert", "model_label": model,
                "train_seconds": seconds, "wall_seconds": seconds, "resumed": False, **hw(cpu)}  # fmt: skip

    fast = [record("a", "fpt", 100.0, "fast"), record("b", "linear", 10.0, "fast"), record("c", "fpt", 140.0, "fast")]
    slow = [record("d", "fpt", 300.0, "slow")]
    slow_kind = kind_of(slow[0])
    assert slow_kind == (None, "slow", "family 23 model 1 stepping 1", None)
    factor, pairs = speed_factor(fast + slow, slow_kind)
    assert pairs == 1 and factor == pytest.approx(2.5)  # 300 s here against 120 s there
    scaled = mean_seconds(fast + slow, slow_kind)
    assert scaled == pytest.approx({("xor", "bert", "fpt"): 300.0, ("xor", "bert", "linear"): 25.0})
    assert mean_seconds(fast + slow, kind_of(fast[0])) == {
        ("xor", "bert", "fpt"): 120.0,
        ("xor", "bert", "linear"): 10.0,
    }
    assert mean_seconds(fast + slow) == {("xor", "bert", "fpt"): 180.0, ("xor", "bert", "linear"): 10.0}  # no kind
    unseen = kind_of(hw("new"))
    assert speed_factor(fast + slow, unseen) == (1.0, 0) and mean_seconds(fast, unseen) == mean_seconds(fast)

    runs = Plan.of(SweepConfig(**tiny_sweep(tiny_bert_dir, seeds=[1]))).now([])
    todo = [r for r in runs if r.model_label == "linear"]
    (line,) = time_left(todo, fast + slow, slow_kind)
    assert line.startswith("time left: about 25 s one run at a time for the 1 run to run")
    assert line.endswith("; on this machine's kind: its own runs' times, else other kinds' × 2.50 (the ratio over "
                         "the 1 task × model pair run on both)")  # fmt: skip
    (line,) = time_left(todo, fast, unseen)
    assert line.endswith(
        "; other machine kinds' times as they are: no task × model has finished a run on this kind yet"
    )
    (line,) = time_left(todo, fast, kind_of(fast[0]))  # one kind: nothing to say
    assert line.endswith(
        "(each at its task and model's mean: wall time where records hold it, else training time alone)"
    )
    assert kind_here("cpu")[0] is None and kind_here("cpu")[1:3] == (cpu_name(), cpu_model())
    # A run on a device this machine lacks gets no kind (unscaled means): training itself refuses it in one line.
    if not torch.cuda.is_available():
        cuda = dataclasses.replace(todo[0], config=todo[0].config.model_copy(update={"device": "cuda"}))
        assert here([cuda]) is None and here([]) is None and here(todo) == kind_here("cpu")
