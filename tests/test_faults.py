"""Fault injection: every file fpt reads back corrupted, truncated, flipped or edited; hostile patches; bad command-line
values; folders that already hold work; kills at random points. Each refused case must give one line on stderr
("fpt: error: ..."), a non-zero exit, no traceback, and leave every file that was there unchanged.

With FPT_FAULT_REPORT=FILE.json (`make faults`), the outcomes are also written there; the README's reliability
figures are read from that file.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from test_resume import kill_after as interrupt_after  # after optimizer step n, as a SIGINT would
from test_resume import resumable_config

import fpt
from fpt.cli import main
from fpt.results import read_curve
from fpt.shipping.checkpoint import CHECKPOINT_FILE
from fpt.shipping.patch import export, read_header, read_patch, save_safetensors
from fpt.shipping.serve import Settings, build, create_app

train_module = importlib.import_module("fpt.train")
OUTCOMES: list[dict] = []  # every case's outcome, for FPT_FAULT_REPORT
KILL_POINTS = 5  # random kill points, each resumed and compared with the unbroken run


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("FPT_FAULT_REPORT")
    if path:
        from fpt.results import environment, write_json

        refused = [o for o in OUTCOMES if o["kind"] != "kill" and o["outcome"] == "refused"]
        kills = [o for o in OUTCOMES if o["kind"] == "kill"]
        write_json(
            path,
            {
                "cases": len(OUTCOMES) - len(kills),
                "refused": len(refused),
                "accepted": len(OUTCOMES) - len(kills) - len(refused),
                "kill_points": len(kills),
                "kill_points_identical": sum(o["outcome"] == "identical" for o in kills),
                "outcomes": OUTCOMES,
                "environment": environment(torch.device("cpu")),
            },
        )


def tiny(tiny_bert_dir: str) -> fpt.TrainConfig:
    """test_resume's run on one thread: numbers compared byte for byte, whatever the machine's load."""
    return resumable_config(tiny_bert_dir, threads=1)


def interrupt_in_checkpoint_write(monkeypatch, write: int) -> None:
    """The next fpt.train is killed inside its `write`-th checkpoint write, after the temp file, before the rename."""
    replace = os.replace
    count = [0]

    def killed(src, dst):
        if str(dst).endswith(CHECKPOINT_FILE):
            count[0] += 1
            if count[0] == write:
                raise KeyboardInterrupt
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def record(run_dir: Path) -> dict:
    result = json.loads((run_dir / "result.json").read_text())
    keys = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_step", "steps_run")
    curve = [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_curve(run_dir)]
    trained = load_file(run_dir / "trained.safetensors")
    return {"metrics": {k: result[k] for k in keys}, "curve": curve,
            "trained": {k: v.numpy().tobytes() for k, v in trained.items()}}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir):
    """The unbroken reference run (and its patch), and the same run killed after step 11 (checkpoint at step 8)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("faults")
    cfg = tiny(tiny_bert_dir)
    fpt.train(cfg, out=base / "finished", quiet=True)
    patch, _ = export(base / "finished", base / "xor.fpt.safetensors")
    mp = pytest.MonkeyPatch()
    interrupt_after(mp, 11)
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=base / "killed", quiet=True)
    mp.undo()
    assert (base / "killed" / CHECKPOINT_FILE).is_file()
    return {"cfg": cfg, "base": base, "patch": patch, "reference": record(base / "finished")}


def refused(name: str, kind: str, args: list[str], folder: Path, capsys, expect: str) -> str:
    """Run `fpt args`; it must exit 2 with one line naming the problem, and leave `folder`'s files as they were."""
    capsys.readouterr()  # what earlier commands printed
    before = snapshot(folder)
    rc = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("fpt: note")]
    ok = rc == 2 and len(lines) == 1 and lines[0].startswith("fpt: error: ") and "Traceback" not in err
    OUTCOMES.append({"case": name, "kind": kind, "outcome": "refused" if ok else "accepted", "message": err.strip()})
    assert ok, (name, rc, err)
    assert expect in lines[0], (name, lines[0])
    assert snapshot(folder) == before, f"{name}: files changed"
    return lines[0]


# ---- checkpoints --------------------------------------------------------------------------------------------------


def edited(src: Path, dst: Path, tensors=None, meta=None, keep_digest: bool = False) -> Path:
    """Write the fpt safetensors file `src` to `dst` with its tensors and/or metadata changed; the digest is
    recomputed (a consistent forgery) unless `keep_digest` (the old digest stays: what a careless edit leaves)."""
    stored = read_header(src.read_bytes(), str(src))
    new_tensors = (tensors or (lambda t: t))(load_file(src))
    new_meta = (meta or (lambda m: m))({k: v if k == "format" else json.loads(v) for k, v in stored.items()})
    if keep_digest:
        save_file(new_tensors, dst, metadata={k: v if k == "format" else json.dumps(v) for k, v in new_meta.items()})
    else:
        save_safetensors(dst, new_tensors, new_meta)
    return dst


def edited_checkpoint(src: Path, dst: Path, tensors=None, meta=None, keep_digest: bool = False) -> None:
    """Copy a killed run's folder with its checkpoint edited (see `edited`)."""
    shutil.copytree(src, dst)
    edited(dst / CHECKPOINT_FILE, dst / CHECKPOINT_FILE, tensors, meta, keep_digest)


def flip_in_data(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x40
    path.write_bytes(bytes(data))


def nan_first_trained(tensors):
    name = next(k for k in tensors if k.startswith("trained/"))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    return tensors


CHECKPOINT_CASES = {
    # name: (tensors edit, metadata edit, keep the old digest, expected words)
    "step edited (60 → 190 style), digest kept": (None, lambda m: {**m, "step": 20}, True, "does not match its sha256"),
    "step edited, digest recomputed": (None, lambda m: {**m, "step": 20}, False, "disagrees with its learning curve"),
    "sampler position 10^9": (None, lambda m: {**m, "position": 10**9}, False, "data position 1000000000"),
    "curve a string": (None, lambda m: {**m, "curve": "oops"}, False, "corrupt checkpoint metadata (curve"),
    "config missing": (None, lambda m: {k: v for k, v in m.items() if k != "config"}, False, "config"),
    "counters missing a field": (None, lambda m: {**m, "counters": {"samples": 1}}, False, "counters"),
    "RNG state of the wrong shape": (
        lambda t: {**t, "rng/torch": torch.zeros(10, dtype=torch.uint8)},
        None,
        False,
        "RNG state 'rng/torch' is uint8 [10]",
    ),  # fmt: skip
    "RNG state bytes scrambled": (
        lambda t: {**t, "rng/torch": torch.full_like(t["rng/torch"], 255)},
        None,
        False,
        "corrupt checkpoint",
    ),  # fmt: skip
    "NaN in a trained tensor": (nan_first_trained, None, False, "holds NaN or inf"),
    "digest removed": (None, lambda m: {k: v for k, v in m.items() if k != "sha256"}, True, "no content digest"),
    "optimizer moment misshaped": (
        lambda t: {**t, "optimizer/0/exp_avg": torch.zeros(3)},
        None,
        False,
        "optimizer state of trained tensor 0 is missing or misshaped (exp_avg)",
    ),
    "optimizer moment missing": (
        lambda t: {k: v for k, v in t.items() if not k.startswith("optimizer/0/")},
        None,
        False,
        "optimizer state for tensors",
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_edited_checkpoint_is_refused(runs, tmp_path, capsys, name):
    tensors, meta, keep, expect = CHECKPOINT_CASES[name]
    folder = tmp_path / "run"
    edited_checkpoint(runs["base"] / "killed", folder, tensors, meta, keep)
    refused(name, "checkpoint", ["train", "--resume", "--out", str(folder), "--quiet"], folder, capsys, expect)


@pytest.mark.parametrize("how", ["flipped byte", "truncated", "empty", "random bytes"])
def test_damaged_checkpoint_file_is_refused(runs, tmp_path, capsys, how):
    folder = tmp_path / "run"
    shutil.copytree(runs["base"] / "killed", folder)
    path = folder / CHECKPOINT_FILE
    if how == "flipped byte":
        flip_in_data(path)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(random.Random(0).randbytes(4096))
    refused(f"checkpoint {how}", "checkpoint", ["train", "--resume", "--out", str(folder), "--quiet"], folder, capsys,
            str(path))  # fmt: skip


# ---- patches ------------------------------------------------------------------------------------------------------


def spec(**change):
    return lambda m: {**m, "task_spec": {**m["task_spec"], **change}}


def output_only(tensors):
    return {k: v for k, v in tensors.items() if k.startswith("head.")}


PATCH_CASES = {
    "tensor bytes flipped": ("flip", None, False, "does not match its sha256"),
    "task spec edited, digest kept": (None, spec(num_classes=3), True, "does not match its sha256"),
    "input_dim 2^24-1": (None, spec(input_dim=2**24 - 1), False, "task_spec gives input_dim 16777215"),
    "num_classes 2^24-1": (None, spec(num_classes=2**24 - 1), False, "outputs per read-out token"),
    "output-only patch asking for a huge input layer": (
        output_only,
        lambda m: {**spec(input_dim=2**24 - 1)(m), "train_groups": ["output"]},
        False,
        "would need",
    ),  # fmt: skip
    "digest removed": (None, lambda m: {k: v for k, v in m.items() if k != "sha256"}, True, "no content digest"),
    "n_bits a bool in the config": (
        None,
        lambda m: {**m, "config": {**m["config"], "steps": True}},
        False,
        "bad patch metadata",
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(PATCH_CASES))
def test_hostile_patch_is_refused_before_anything_is_built(runs, tmp_path, capsys, monkeypatch, name):
    tensors, meta, keep, expect = PATCH_CASES[name]
    path = tmp_path / "p.fpt.safetensors"
    if tensors == "flip":
        shutil.copy(runs["patch"], path)
        flip_in_data(path, 20)
    else:
        edited(runs["patch"], path, tensors, meta, keep)

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built from a patch that should have been refused")

    monkeypatch.setattr(fpt.registry.MODELS, "build", no_build)
    args = ["load", str(path), "--backbone-path", runs["cfg"].backbone_path]
    refused(f"patch: {name}", "patch", args, tmp_path, capsys, expect)


def test_a_patch_cannot_choose_the_path_it_is_read_from(runs, tmp_path, capsys, monkeypatch):
    path = edited(runs["patch"], tmp_path / "p.fpt.safetensors",
                        meta=lambda m: {**m, "config": {**m["config"], "backbone_path": "/etc"}})  # fmt: skip
    opened = []
    real_open = open

    def watch(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watch)
    refused("patch: backbone_path /etc", "patch", ["load", str(path)], tmp_path, capsys, "does not read paths named")
    assert not any(p.startswith("/etc") for p in opened)


def test_upload_of_a_damaged_patch_is_refused(runs, tmp_path):
    core, _ = build([str(runs["patch"])], backbone_path=runs["cfg"].backbone_path)
    settings = Settings(allow_upload=True, upload_token="t0ken")
    flipped = tmp_path / "f.fpt.safetensors"
    shutil.copy(runs["patch"], flipped)
    flip_in_data(flipped, 20)
    with TestClient(create_app(core, settings)) as client:
        cases = {
            "upload: flipped patch": (flipped.read_bytes(), {"Authorization": "Bearer t0ken"}, 422),
            "upload: token without 'Bearer '": (runs["patch"].read_bytes(), {"Authorization": "t0ken"}, 401),
            "upload: wrong scheme": (runs["patch"].read_bytes(), {"Authorization": "Basic t0ken"}, 401),
        }
        for name, (body, headers, status) in cases.items():
            reply = client.post("/v1/tasks?name=new", content=body, headers=headers)
            ok = reply.status_code == status
            OUTCOMES.append({"case": name, "kind": "serve", "outcome": "refused" if ok else "accepted",
                             "message": reply.text})  # fmt: skip
            assert ok, (name, reply.status_code, reply.text)
        assert "new" not in client.get("/v1/tasks").text
        huge = [[[1e38]] * 10]
        reply = client.post("/v1/tasks/xor/predict", json={"inputs": huge})
        ok = reply.status_code == 422 and "not finite" in reply.text
        OUTCOMES.append({"case": "predict: inputs of 1e38", "kind": "serve", "outcome": "refused" if ok else "accepted",
                         "message": reply.text})  # fmt: skip
        assert ok, reply.text


# ---- folders that hold work, and where the files go ---------------------------------------------------------------


def test_no_run_is_overwritten_without_overwrite(runs, tmp_path, capsys, tiny_bert_dir):
    finished, killed = tmp_path / "finished", tmp_path / "killed"
    shutil.copytree(runs["base"] / "finished", finished)
    shutil.copytree(runs["base"] / "killed", killed)
    train = ["train", "--task", "digits", "--backbone", "bert", "--backbone-path", tiny_bert_dir, "--steps", "2",
             "--quiet"]  # fmt: skip
    refused("train into a finished run", "folder", [*train, "--out", str(finished)], tmp_path, capsys,
            "already holds a run (result.json)")  # fmt: skip
    refused("train into a killed run", "folder", [*train, "--out", str(killed)], tmp_path, capsys,
            "already holds a run (checkpoint.safetensors)")  # fmt: skip
    patch = finished / "xor.fpt.safetensors"
    shutil.copy(runs["patch"], patch)
    refused("export onto an existing patch", "folder", ["export", str(finished), "--out", str(patch)], tmp_path,
            capsys, "already exists; give --overwrite")  # fmt: skip
    refused("--resume and --overwrite", "folder", [*train, "--out", str(killed), "--resume", "--overwrite"], tmp_path,
            capsys, "not both")  # fmt: skip
    # with --overwrite the old run goes at once, and a new one replaces it
    assert main([*train, "--out", str(finished), "--overwrite"]) == 0
    assert json.loads((finished / "result.json").read_text())["task"] == "digits"
    assert main(["export", str(finished), "--out", str(patch), "--overwrite"]) == 0
    assert read_patch(patch).spec.name == "digits"


def test_bad_out_is_refused_before_training(runs, tmp_path, capsys, monkeypatch, tiny_bert_dir):
    train = ["train", "--backbone", "bert", "--backbone-path", tiny_bert_dir, "--steps", "4", "--quiet"]
    (tmp_path / "a-file").write_text("keep me")
    calls = []
    monkeypatch.setattr(train_module, "get_task", lambda *a, **k: calls.append(1))  # nothing may start
    refused("--out is a file", "folder", [*train, "--out", str(tmp_path / "a-file")], tmp_path, capsys, "is a file")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(tmp_path)) else
                        real_access(p, mode))  # fmt: skip
    refused("--out not writable", "folder", [*train, "--out", str(tmp_path / "ro" / "run")], tmp_path, capsys,
            "permission denied")  # fmt: skip
    assert not calls
    monkeypatch.undo()
    monkeypatch.setattr(train_module.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    refused("disk full", "folder", [*train, "--out", str(tmp_path / "full")], tmp_path, capsys, "free")
    assert not (tmp_path / "full").exists()


# ---- values a user can get wrong ----------------------------------------------------------------------------------

BAD_VALUES = {
    "--steps true": (["--steps", "true"], "steps: expected a number"),
    "--lr inf": (["--lr", "inf"], "lr: Input should be a finite number"),
    "--lr nan": (["--lr", ".nan"], "lr: Input should be a finite number"),
    "--batch-size 0": (["--batch-size", "0"], "batch_size: Input should be greater than 0"),
    "task arg n_bits: true": (["--task", "bit-memory", "--task-args", "{n_bits: true}"], "argument n_bits"),
    "task arg mask_prob: .inf": (["--task", "bit-memory", "--task-args", "{mask_prob: .inf}"], "mask_prob"),
    "task arg train_size 10^12": (["--task-args", "{train_size: 1000000000000}"], "would need at least 8.0 TB"),
    "unknown task arg": (["--task-args", "{bits: 3}"], "has no argument 'bits'"),
    "task args not a mapping": (["--task-args", "[1, 2]"], "task_args"),
}


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_bad_values_are_one_line(tmp_path, capsys, tiny_bert_dir, name):
    extra, expect = BAD_VALUES[name]
    args = ["train", "--backbone", "bert", "--backbone-path", tiny_bert_dir, "--out", str(tmp_path / "run"), *extra]
    refused(f"value: {name}", "value", args, tmp_path, capsys, expect)
    assert not (tmp_path / "run").exists()


def test_pickled_backbone_is_one_line(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    folder = tmp_path / "pickled"
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")  # the weights as a pickle, as older checkpoints ship them
    args = ["train", "--backbone", "bert", "--backbone-path", str(tmp_path / "pickled"), "--steps", "2", "--quiet"]
    refused("backbone folder with pickled weights only", "backbone", args, tmp_path, capsys,
            "reads safetensors weights only")  # fmt: skip


# ---- kills at random points ---------------------------------------------------------------------------------------


def test_kills_at_random_points_resume_to_the_unbroken_run(runs, tmp_path, monkeypatch):
    """KILL_POINTS kills drawn at random (seeded): after an optimizer step, or inside a checkpoint write (the temp file
    written, the rename not done); each resumed run ends with the unbroken run's numbers and tensors, byte for byte."""
    rng = random.Random(2026)
    points = [("step", rng.randint(1, 29)) if rng.random() < 0.6 else ("write", rng.randint(1, 7))
              for _ in range(KILL_POINTS)]  # fmt: skip
    for i, (where, at) in enumerate(points):
        out = tmp_path / f"kill-{i}"
        (interrupt_after if where == "step" else interrupt_in_checkpoint_write)(monkeypatch, at)
        with pytest.raises(KeyboardInterrupt):
            fpt.train(runs["cfg"], out=out, quiet=True)
        monkeypatch.undo()
        fpt.train(runs["cfg"], out=out, quiet=True, resume=(out / CHECKPOINT_FILE).is_file())
        same = record(out) == runs["reference"]
        OUTCOMES.append({"case": f"kill {where} {at}", "kind": "kill", "outcome": "identical" if same else "differs"})
        assert same, (where, at)
        assert not list(out.glob(".*.tmp"))


def test_a_fully_trained_baseline_with_unused_weights_resumes(runs, tmp_path, monkeypatch):
    """The transformer baseline trains every weight, but its token embeddings get no gradient on a features task, so
    Adam keeps no state for them: its checkpoint is still whole, and the resumed run equals the unbroken one."""
    cfg = runs["cfg"].model_copy(update={"model": "transformer", "train": "all", "lr": 1e-4, "steps": 12})
    fpt.train(cfg, out=tmp_path / "unbroken", quiet=True)
    interrupt_after(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path / "killed", quiet=True)
    monkeypatch.undo()
    meta = read_header((tmp_path / "killed" / CHECKPOINT_FILE).read_bytes(), "checkpoint")
    trained = sum(len(group["params"]) for group in json.loads(meta["optimizer_groups"]))
    assert len(json.loads(meta["optimizer_state"])) < trained  # some trained tensors have no state
    fpt.train(cfg, out=tmp_path / "killed", quiet=True, resume=True)
    assert record(tmp_path / "killed") == record(tmp_path / "unbroken")


def test_resume_with_placement_options_continues(runs, tmp_path, capsys):
    """`--resume --device cpu --threads 1` continues the run: placement options may differ from the checkpoint's
    config (device auto here), and options left out are the checkpoint's, not the defaults."""
    folder = tmp_path / "run"
    shutil.copytree(runs["base"] / "killed", folder)
    assert main(["train", "--resume", "--out", str(folder), "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    assert record(folder) == runs["reference"]
    shutil.rmtree(folder)
    shutil.copytree(runs["base"] / "killed", folder)
    refused("resume with another seed", "value", ["train", "--resume", "--out", str(folder), "--seed", "3"], folder,
            capsys, "the config differs in seed (checkpoint 0, now 3)")  # fmt: skip


def test_header_length_field_is_bounded(runs, tmp_path, capsys):
    path = tmp_path / "p.fpt.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + runs["patch"].read_bytes()[8:])
    refused("patch: header length 2^60", "patch", ["load", str(path)], tmp_path, capsys, "not an fpt file")


def test_written_files_get_ordinary_permissions(tmp_path):
    """Atomic writes go through a private temp file; the file they leave has a plain open()'s mode (0666 less the
    umask), not the temp file's 0600."""
    from fpt.results import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "result.json", {"a": 1})
        save_safetensors(tmp_path / "x.safetensors", {"w": torch.zeros(2)}, {"format": "fpt-test/1"})
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644
