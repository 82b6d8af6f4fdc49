import importlib
import inspect
import json
import math

import pytest
import torch

import fpt
from fpt.results import read_curve
from fpt.tasks.base import Task, TaskSpec, TensorSplit

RESULT_FIELDS = {
    "task",
    "backbone",
    "init",
    "train_groups",
    "trainable_params",
    "total_params",
    "seed",
    "lr",
    "steps",
    "best_step",
    "val_accuracy",
    "test_accuracy",
    "train_seconds",
    "samples_per_second",
    "config",
    "environment",
}


def test_train_writes_result_files(tiny_cfg, tmp_path):
    result = fpt.train(tiny_cfg(), out=tmp_path, quiet=True)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert RESULT_FIELDS <= set(saved)
    assert saved["test_accuracy"] == result["test_accuracy"]
    assert saved["config"]["steps"] == 20 and saved["train_groups"] == list(fpt.PAPER_GROUPS)
    assert {"versions", "hardware", "git"} <= set(saved["environment"])
    assert saved["environment"]["versions"]["torch"].startswith("2.13")
    curve = read_curve(tmp_path)
    assert [r["step"] for r in curve] == [10, 20] and all(math.isfinite(r["train_loss"]) for r in curve)
    assert (tmp_path / "config.yaml").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_training_loop_reads_in_one_sitting():
    """train.run is the loop alone (set-up, steps, validation, the end); its other jobs have names of their own."""
    run = importlib.import_module("fpt.train").run  # `fpt.train` the attribute is the function
    assert len(inspect.getsource(run).splitlines()) <= 70


def test_same_seed_same_metrics(tiny_cfg):
    a, b = fpt.train(tiny_cfg(seed=3), quiet=True), fpt.train(tiny_cfg(seed=3), quiet=True)
    keys = ("val_accuracy", "test_accuracy", "val_loss", "test_loss", "best_step")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    c = fpt.train(tiny_cfg(seed=4), quiet=True)
    assert c["val_loss"] != a["val_loss"]


def test_frozen_weights_do_not_move(tiny_cfg):
    cfg = tiny_cfg()
    task = fpt.get_task(cfg.task, **cfg.task_args)
    model = fpt.build_model(cfg, task)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    x, y = task.splits["train"][0]
    loss = torch.nn.functional.cross_entropy(model(x[None], torch.ones(1, x.shape[0], dtype=torch.bool))[0], y)
    loss.backward()
    torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        assert moved == p.requires_grad, name
        if not p.requires_grad:
            assert p.grad is None, name  # no weight gradient is computed for a frozen tensor


def test_early_stopping_and_best_step(tiny_cfg):
    result = fpt.train(tiny_cfg(steps=200, eval_every=5, patience=2, lr=1e-9), quiet=True)
    assert result["stopped_early"] and result["steps_run"] < 200 and result["best_step"] <= result["steps_run"]


def nan_task() -> Task:
    x = torch.full((8, 4, 1), float("nan"))
    spec = TaskSpec("nan", "test", "features", input_dim=1, num_classes=2, max_tokens=4)
    split = TensorSplit(list(x), [0] * 8)
    return Task(spec, {"train": split, "val": split, "test": split})


def test_nan_loss_is_an_error_and_keeps_earlier_results(tiny_cfg, tmp_path):
    fpt.train(tiny_cfg(), out=tmp_path / "done", quiet=True)
    before = (tmp_path / "done" / "result.json").read_text()
    with pytest.raises(fpt.FPTError, match="already holds a run"):  # nothing starts in a finished run's folder
        fpt.train(tiny_cfg(), out=tmp_path / "done", quiet=True, task=nan_task())
    assert (tmp_path / "done" / "result.json").read_text() == before
    with pytest.raises(fpt.FPTError, match="training loss became nan at step 1"):
        fpt.train(tiny_cfg(), out=tmp_path / "new", quiet=True, task=nan_task())
    assert not (tmp_path / "new" / "result.json").exists()


def test_sequence_longer_than_positions(tiny_cfg):
    with pytest.raises(fpt.FPTError, match="longer than backbone 'bert' covers \\(128 positions\\)"):
        fpt.train(tiny_cfg(task="bit-memory", task_args={"n_bits": 2000, "val_size": 4, "test_size": 4}), quiet=True)


@pytest.mark.parametrize(
    "init, input_init, learns",
    [("pretrained", "matched", True), ("pretrained", "paper", False), ("random", "matched", False)],
)
def test_minilm_bit_xor_needs_pretraining_and_matched_input_scale(init, input_init, learns):
    """The real shipped backbone, 100 steps: pretrained minilm with the matched input init solves bit-xor; the paper's
    input init (its bias washes position out in BERT's embedding LayerNorm) and a random backbone stay near chance."""
    cfg = fpt.TrainConfig(
        task="bit-xor",
        init=init,
        input_init=input_init,
        steps=100,
        eval_every=50,
        seed=0,
        task_args={"val_size": 200, "test_size": 200},
    )
    result = fpt.train(cfg, quiet=True)
    if learns:
        assert result["test_accuracy"] > 0.95
    else:
        assert result["test_accuracy"] < 0.75


def test_a_record_is_marked_dirty_only_by_uncommitted_changes_to_the_code(tmp_path):
    """A sweep appends to its committed results file while it runs: that must not mark its later records as run from
    uncommitted code. Only the fpt source folder counts."""
    import subprocess

    from fpt.results import source_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)  # fmt: skip

    code, results = tmp_path / "src" / "fpt", tmp_path / "results"
    code.mkdir(parents=True)
    results.mkdir()
    (code / "train.py").write_text("x = 1\n")
    (results / "sweep.jsonl").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    assert source_state(code)["dirty"] is False and len(source_state(code)["commit"]) == 40
    (results / "sweep.jsonl").write_text("{}\n{}\n")
    (tmp_path / "README.md").write_text("untracked\n")
    assert source_state(code)["dirty"] is False  # the results file and an untracked file are not the code
    (code / "train.py").write_text("x = 2\n")
    assert source_state(code)["dirty"] is True
    assert source_state(tmp_path / "nowhere") == {"commit": None, "dirty": None}
