"""Gradual unfreezing: which tensors train and hold optimizer state at each stage, and resume across a boundary."""

from __future__ import annotations

import importlib

import pytest
import torch
from test_resume import assert_same_run, kill_after, resumable_config, run_record

import fpt
from fpt import freeze
from fpt.unfreeze import Stage, Unfreezing, parse_schedule

train_module = importlib.import_module("fpt.train")
SCHEDULE = "attention/-1@4,attention/0@6,feedforward@8"  # attention top-down, then every feed-forward


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_parse_schedule_and_the_groups_it_adds(tiny_cfg):
    assert parse_schedule("attention/-1@4, feedforward@8") == (Stage("attention", -1, 4), Stage("feedforward", None, 8))
    assert tiny_cfg(unfreeze=SCHEDULE).train == "input,output,attention,feedforward,layernorm,positional"
    for bad in ("attention", "attn@4", "attention/x@4", "attention@-1"):
        with pytest.raises(fpt.FPTError, match="unfreeze entry"):
            parse_schedule(bad)
    for schedule, message in [
        ("attention/5@4", "layer 5 of a backbone with 2 layers"),
        ("attention/-1@4", r"names attention by layer but not its layer\(s\) \[0\]"),
    ]:
        cfg = tiny_cfg(unfreeze=schedule)
        with pytest.raises(fpt.FPTError, match=message):
            Unfreezing(fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args)), cfg.unfreeze)


def test_stages_set_requires_grad_and_optimizer_state(tiny_cfg, monkeypatch):
    """Record, after each optimizer step, which tensors train and which have Adam state: a stage's tensors get neither
    before its step, and both from the step after it on."""
    cfg = tiny_cfg(unfreeze=SCHEDULE, steps=12, eval_every=4)
    seen: dict[int, tuple[set[str], set[str]]] = {}
    make_optimizer = train_module.make_optimizer

    def recording(cfg, model):
        optimizer = make_optimizer(cfg, model)
        names = {id(p): n for n, p in model.named_parameters()}

        def hook(opt, *_):
            trains = {n for n, p in model.named_parameters() if p.requires_grad}
            seen[len(seen) + 1] = (trains, {names[id(p)] for p in opt.state})

        optimizer.register_step_post_hook(hook)
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", recording)
    fpt.train(cfg, quiet=True)
    model = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))
    named, layer_of = freeze.named_groups(model), freeze.layer_of(model)
    first = {n for g in ("input", "output", "layernorm", "positional") for n in named[g]}
    top_attention = {n for n in named["attention"] if layer_of[n] == 1}
    expected = {step: first for step in range(1, 5)}
    expected |= {step: first | top_attention for step in range(5, 7)}
    expected |= {step: first | set(named["attention"]) for step in range(7, 9)}
    expected |= {step: first | set(named["attention"]) | set(named["feedforward"]) for step in range(9, 13)}
    for step, (trains, with_state) in seen.items():
        assert trains == expected[step] and with_state == expected[step], step
    assert len(seen) == 12


def test_resume_across_a_stage_boundary_is_bit_exact(tiny_bert_dir, monkeypatch, tmp_path):
    cfg = resumable_config(tiny_bert_dir, unfreeze="attention/-1@6,attention/-2@9,feedforward@10", steps=16)
    fpt.train(cfg, out=tmp_path / "ref", quiet=True)
    kill_after(monkeypatch, 11)  # killed in the last stage; resumes from step 8's checkpoint, before its boundary
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path / "run", quiet=True)
    monkeypatch.undo()
    fpt.train(cfg, out=tmp_path / "run", quiet=True, resume=True)
    assert_same_run(run_record(tmp_path / "run"), run_record(tmp_path / "ref"))
