"""A killed run resumes from its last checkpoint and ends bit-exactly where an uninterrupted run ends."""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import fpt
from fpt.results import read_curve
from fpt.shipping.checkpoint import CHECKPOINT_FILE, BatchStream
from fpt.tasks.base import TensorSplit

train_module = importlib.import_module("fpt.train")  # `fpt.train` the attribute is the function

METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_step", "steps_run", "stopped_early")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # a tiny model on a busy CPU runs ~10× faster on one thread than on two


def small(tiny_cfg, **overrides):
    """100 training examples in batches of 16: an epoch is 6 batches, so 30 steps cross several epochs; dropout is
    on (0.1), so torch's RNG state matters too."""
    values = dict(task_args={"train_size": 100, "val_size": 32, "test_size": 32}, steps=30, eval_every=4, patience=None)
    return tiny_cfg(**{**values, **overrides})


def kill_after(monkeypatch, step: int, where: str = "optimizer") -> None:
    """Make the next fpt.train raise KeyboardInterrupt right after optimizer step `step` (as a SIGINT would)."""
    make_optimizer = train_module.make_optimizer

    def interrupted(cfg, model):
        optimizer = make_optimizer(cfg, model)
        count = [0]

        def hook(*_):
            count[0] += 1
            if count[0] == step:
                raise KeyboardInterrupt

        optimizer.register_step_post_hook(hook)
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", interrupted)


def run_record(out) -> dict:
    result = json.loads((out / "result.json").read_text())
    curve = read_curve(out)
    return {
        "metrics": {k: result[k] for k in METRICS},
        "curve": [{k: v for k, v in row.items() if k != "train_seconds"} for row in curve],
        "trained": load_file(out / "trained.safetensors"),
    }


def assert_same_run(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["curve"] == b["curve"]
    assert a["trained"].keys() == b["trained"].keys()
    for name in a["trained"]:
        assert torch.equal(a["trained"][name], b["trained"][name]), name


def resumable_config(tiny_bert_dir: str, **overrides) -> fpt.TrainConfig:
    """30 steps over several epochs of 100 examples on the tiny BERT, dropout on, a checkpoint every 4 steps."""
    values = dict(
        task="bit-xor",
        task_args={"train_size": 100, "val_size": 32, "test_size": 32},
        backbone="bert",
        backbone_path=tiny_bert_dir,
        steps=30,
        eval_every=4,
        patience=None,
        batch_size=16,
        seed=0,
    )
    return fpt.TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_bert_dir):
    """The reference: the same run, never stopped."""
    cfg = resumable_config(tiny_bert_dir)
    out = tmp_path_factory.mktemp("uninterrupted")
    torch.set_num_threads(1)
    fpt.train(cfg, out=out, quiet=True)
    return cfg, run_record(out)


@pytest.mark.parametrize("killed_at", [11, 14])  # resumes from step 8 (mid-epoch) / step 12 (an epoch's last batch)
def test_resume_after_kill_is_bit_exact(uninterrupted, monkeypatch, tmp_path, killed_at):
    cfg, reference = uninterrupted
    kill_after(monkeypatch, killed_at)
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path, quiet=True)
    assert (tmp_path / CHECKPOINT_FILE).is_file() and not (tmp_path / "result.json").exists()
    monkeypatch.undo()
    fpt.train(cfg, out=tmp_path, quiet=True, resume=True)
    assert_same_run(run_record(tmp_path), reference)
    assert not (tmp_path / CHECKPOINT_FILE).exists()  # a finished run drops its checkpoint
    assert not list(tmp_path.glob(".*tmp"))


def test_resume_twice_and_from_the_cli(uninterrupted, monkeypatch, tmp_path, capsys):
    cfg, reference = uninterrupted
    kill_after(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path, quiet=True)
    kill_after(monkeypatch, 13)  # killed again, 13 steps after resuming from step 4
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path, quiet=True, resume=True)
    monkeypatch.undo()
    from fpt.cli import main

    assert main(["train", "--resume", "--out", str(tmp_path), "--quiet"]) == 0  # the config comes from the checkpoint
    assert_same_run(run_record(tmp_path), reference)
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert "holds a finished run" in capsys.readouterr().err


def test_killed_after_early_stop_stays_stopped(tiny_cfg, monkeypatch, tmp_path):
    cfg = small(tiny_cfg, steps=200, eval_every=5, patience=2, lr=1e-9)
    reference = fpt.train(cfg, out=tmp_path / "ref", quiet=True)
    assert reference["stopped_early"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # killed while writing the results, after the loop had stopped

    monkeypatch.setattr(train_module, "write_trained", killed)
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path / "run", quiet=True)
    monkeypatch.undo()
    fpt.train(cfg, out=tmp_path / "run", quiet=True, resume=True)
    assert_same_run(run_record(tmp_path / "run"), run_record(tmp_path / "ref"))


def test_resume_with_a_different_config_names_the_keys(tiny_cfg, monkeypatch, tmp_path):
    cfg = small(tiny_cfg)
    kill_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path, quiet=True)
    monkeypatch.undo()
    changed = cfg.model_copy(update={"lr": 0.002, "seed": 1})
    with pytest.raises(fpt.FPTError, match=r"config differs in lr \(checkpoint 0.001, now 0.002\); seed"):
        fpt.train(changed, out=tmp_path, quiet=True, resume=True)
    with pytest.raises(fpt.FPTError, match="needs its folder"):
        fpt.train(cfg, quiet=True, resume=True)


def test_resume_without_checkpoint_starts_from_zero(tiny_cfg, tmp_path, capsys):
    cfg = small(tiny_cfg, steps=8)
    a = fpt.train(cfg, out=tmp_path / "a", quiet=True, resume=True)
    assert "starting the run from step 0" in capsys.readouterr().err
    b = fpt.train(cfg, quiet=True)
    assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}


@pytest.mark.parametrize("size, batch", [(100, 16), (96, 16), (10, 16)])  # ragged, exact and single-batch epochs
def test_batch_stream_restores_the_data_order(size, batch):
    split = TensorSplit(list(torch.arange(size, dtype=torch.float32)[:, None, None]), list(range(size)))
    stream = BatchStream(split, batch, seed=3)
    full = [next(stream)[2].flatten().tolist() for _ in range(40)]
    for cut in (1, 5, 6, 7, 13):
        stream = BatchStream(split, batch, seed=3)
        for _ in range(cut):
            next(stream)
        epoch_start, position = stream.state()
        resumed = BatchStream(split, batch, seed=3)
        resumed.restore(epoch_start.clone(), position)
        assert [next(resumed)[2].flatten().tolist() for _ in range(40 - cut)] == full[cut:], cut


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_from_the_cli(tiny_cfg, tiny_bert_dir, tmp_path):
    """A real kill: `fpt train` in a subprocess, SIGKILLed as soon as its first checkpoint is on disk, then resumed
    with `fpt train --resume --out DIR`; it ends as the same run never stopped."""
    cfg = small(tiny_cfg, steps=300, threads=1)
    fpt.train(cfg, out=tmp_path / "reference", quiet=True)
    run = tmp_path / "killed"
    options = [f"--{k.replace('_', '-')}={json.dumps(v) if isinstance(v, dict) or v is None else v}"
               for k, v in cfg.model_dump().items()]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "fpt", "train", *options, "--out", str(run), "--quiet"],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run / CHECKPOINT_FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "result.json").exists(), "the run finished before it could be killed"
    from fpt.cli import main

    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    assert_same_run(run_record(run), run_record(tmp_path / "reference"))
    assert not list(run.glob(".*tmp"))
