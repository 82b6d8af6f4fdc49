"""Data parallel: `torchrun --nproc_per_node 2 -m fpt train` on 2 CPU processes (gloo) ends where 1 process ends."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import fpt
from fpt.distributed import Group, parallel
from fpt.moved import MOVED_FILE
from fpt.results import read_curve
from fpt.shipping.checkpoint import CHECKPOINT_FILE, BatchStream
from fpt.tasks.base import TensorSplit
from fpt.train import Stepper, make_optimizer

OPTIONS = {  # dropout off: with it, each process draws its own masks and the runs differ by chance
    "task": "bit-xor",
    "task_args": {"train_size": 256, "val_size": 63, "test_size": 65},  # odd sizes: uneven evaluation shards
    "steps": 24,
    "eval_every": 8,
    "batch_size": 16,
    "dropout": 0.0,
    "patience": None,
    "threads": 1,
    "seed": 0,
}


def torchrun(out: Path, options: dict, processes: int = 2) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    args += ["-m", "fpt", "train", "--quiet", "--out", str(out)]
    for key, value in options.items():
        args += ["--" + key.replace("_", "-"), value if isinstance(value, str) else json.dumps(value)]
    src = str(Path(fpt.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tiny_bert_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    options = {**OPTIONS, "backbone": "bert", "backbone_path": tiny_bert_dir}
    two = torchrun(folder / "two", options)
    assert two.returncode == 0, two.stderr[-3000:]
    torch.set_num_threads(1)
    fpt.train(fpt.TrainConfig(**options), out=folder / "one", quiet=True)
    return folder / "one", folder / "two", two


def test_two_processes_train_like_one(runs):
    one, two, _ = runs
    a, b = (json.loads((run / "result.json").read_text()) for run in (one, two))
    assert b["processes"] == 2 and a["processes"] == 1
    assert a["best_step"] == b["best_step"] and a["steps_run"] == b["steps_run"] == 24
    for key in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    curve_a, curve_b = (read_curve(run) for run in runs[:2])
    assert [r["step"] for r in curve_a] == [r["step"] for r in curve_b] == [8, 16, 24]
    for ra, rb in zip(curve_a, curve_b, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["val_accuracy"] == pytest.approx(ra["val_accuracy"], abs=1e-6)
    trained_a, trained_b = load_file(one / "trained.safetensors"), load_file(two / "trained.safetensors")
    assert trained_a.keys() == trained_b.keys()
    for name in trained_a:
        torch.testing.assert_close(trained_b[name], trained_a[name], atol=1e-4, rtol=1e-3, msg=name)


def test_only_rank_zero_writes_and_reports(runs):
    _, two, proc = runs
    files = ["config.yaml", "curve.jsonl", MOVED_FILE, "result.json", "trained.safetensors"]
    assert sorted(p.name for p in two.iterdir()) == sorted(files)
    assert not (two / CHECKPOINT_FILE).exists()
    logs = [line for line in proc.stderr.splitlines() if "val_acc" in line]
    assert len(logs) == 3  # one line per validation, from rank 0 only


def test_each_rank_takes_its_rows_of_the_global_batch():
    split = TensorSplit(list(torch.arange(10.0)[:, None, None]), list(range(10)))
    whole = next(BatchStream(split, 4, seed=0))[2].flatten().tolist()
    parts = [next(BatchStream(split, 4, seed=0, group=Group(rank, 2)))[2].flatten().tolist() for rank in (0, 1)]
    assert parts == [whole[0::2], whole[1::2]]


def test_ddp_takes_trained_parameters_the_forward_never_uses(tiny_cfg):
    """Full fine-tuning trains BERT's word embeddings, which a features task never reaches: DDP must accept that (a
    1-process gloo group, so no second process is started). It runs in a spawned process that exits without running
    destructors: freeing a DDP reducer after its gloo group was destroyed can block forever in the group's destructor,
    which would hang the test session rather than fail a test."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    cfg = tiny_cfg(train="all", dropout=0.0)  # the same batch three times: without dropout its loss falls
    process = context.Process(target=ddp_steps, args=(cfg, free_port(), results))
    process.start()
    try:
        losses = results.get(timeout=240)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    assert not isinstance(losses, str), losses
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0]


def ddp_steps(cfg: fpt.TrainConfig, port: int, results) -> None:
    """Three DDP steps of `cfg`'s model in a 1-process gloo group; puts the losses (or the error) on `results`."""
    try:
        torch.set_num_threads(1)
        task = fpt.get_task(cfg.task, **cfg.task_args)
        model = fpt.build_model(cfg, task)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        net = parallel(model, Group(0, 2), torch.device("cpu"))  # a group of 2 as far as fpt knows: DDP on
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
        optimizer = make_optimizer(cfg, model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        step = Stepper(cfg, net, optimizer, scheduler, torch.device("cpu"))
        batch = next(BatchStream(task.splits["train"], 8, seed=0))
        results.put([step(*batch).item() for _ in range(3)])
    except Exception as err:  # noqa: BLE001 - reported to the test, which fails with it
        results.put(f"{type(err).__name__}: {err}")
    finally:
        results.close()
        results.join_thread()
        os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
