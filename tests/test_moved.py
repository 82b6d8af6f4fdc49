"""What moved: moved.json's numbers against a direct computation from the run's saved tensors and a fresh build."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import fpt
from fpt import freeze
from fpt.moved import MOVED_FILE


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("method", ["fpt", "lora"])
def test_moved_matches_a_direct_computation(tiny_cfg, tmp_path, method):
    cfg = tiny_cfg(method=method, steps=6, eval_every=3, lr=1e-2, lora_alpha=16.0 if method == "lora" else 8.0)
    fpt.train(cfg, out=tmp_path, quiet=True)
    record = json.loads((tmp_path / MOVED_FILE).read_text())
    final = load_file(tmp_path / "trained.safetensors")  # the best-on-validation tensors the run exports
    start = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))  # the same seeded build: θ₀
    initial = dict(start.named_parameters())
    rows = {r["name"]: r for r in record["tensors"]}
    assert set(rows) == set(final) and record["layers"] == 2 and record["method"] == method
    for name, theta in final.items():
        theta0 = initial[name].detach()
        change, base = (theta.double() - theta0.double()).norm().item(), theta0.double().norm().item()
        assert rows[name]["change_norm"] == pytest.approx(change, rel=1e-9, abs=1e-12)
        if base > 0:
            assert rows[name]["relative_change"] == pytest.approx(change / base, rel=1e-9)
        else:
            assert rows[name]["relative_change"] is None  # a LoRA B starts at zero
    layer_norms = [n for n in rows if rows[n]["group"] == "layernorm" and ".layer.1." in n]
    cell = next(c for c in record["cells"] if c["group"] == "layernorm" and c["layer"] == 1) if layer_norms else None
    if cell is not None:
        num = sum(rows[n]["change_norm"] ** 2 for n in layer_norms)
        den = sum(rows[n]["initial_norm"] ** 2 for n in layer_norms)
        assert cell["relative_change"] == pytest.approx(math.sqrt(num / den), rel=1e-9)
    if method == "lora":  # the low-rank update of layer 0's query, B·A·alpha/rank, against the frozen weight
        prefix = "backbone.model.encoder.layer.0.attention.self.query"
        delta = final[f"{prefix}.lora_B.default.weight"] @ final[f"{prefix}.lora_A.default.weight"] * (16.0 / 8)
        weight = initial[f"{prefix}.base_layer.weight"].detach()
        update = next(u for u in record["updates"] if u["name"] == prefix)
        assert update["layer"] == 0 and update["change_norm"] == pytest.approx(delta.double().norm().item(), rel=1e-6)
        assert update["relative_change"] == pytest.approx(update["change_norm"] / weight.double().norm().item())
        adapter_cells = {c["layer"]: c for c in record["cells"] if c["group"] == "adapter"}
        assert set(adapter_cells) == {0, 1} and adapter_cells[0]["relative_change"] > 0
    groups = {c["group"] for c in record["cells"]}
    assert groups == set(freeze.parse_groups(cfg.train))


def test_report_draws_what_moved(tiny_cfg, tmp_path):
    """`fpt report` on run folders that hold moved.json: a table row per setting and the heatmap."""
    from fpt.experiments.report import ReportOptions, write_report

    for method in ("fpt", "lora"):
        fpt.train(tiny_cfg(method=method, steps=4, eval_every=2), out=tmp_path / "runs" / method, quiet=True)
    report = write_report([tmp_path / "runs"], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    assert "## What moved" in report and "![what moved](moved.png)" in report
    assert (tmp_path / "report" / "moved.png").stat().st_size > 0
    section = report.split("## What moved")[1].split("\n## ")[0]
    header = next(line for line in section.splitlines() if line.startswith("| task | setting"))
    lora = next(line for line in section.splitlines() if "method=lora" in line)
    cells = dict(zip(header.split(" | "), lora.split(" | "), strict=True))
    assert cells["seeds |"] == "1 |" and float(cells["adapter"]) > 0 and cells["positional"] == "–"


def test_a_report_of_several_tasks_draws_what_moved_per_task(tiny_cfg, tmp_path):
    """A report of several tasks draws one what-moved figure per task (moved_<task>.png), not one figure of all."""
    from fpt.experiments.report import ReportOptions, write_report

    bits = {"bit-xor": {}, "bit-memory": {"n_bits": 10, "patch": 5}}
    for task in ("bit-xor", "bit-memory"):
        args = {"train_size": 64, "val_size": 16, "test_size": 16, **bits[task]}
        fpt.train(tiny_cfg(task=task, task_args=args, steps=4, eval_every=2), out=tmp_path / "runs" / task, quiet=True)
    report = write_report([tmp_path / "runs"], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    figures = sorted(p.name for p in (tmp_path / "report").glob("moved*.png"))
    assert figures == ["moved_bit-memory.png", "moved_bit-xor.png"]
    assert "![what moved on bit-xor](moved_bit-xor.png)" in report and "(moved.png)" not in report
