"""fpt report: intervals, lr selection on validation, tables, answers, plots, all from the results file."""

from __future__ import annotations

import math

import pytest
from matplotlib.image import imread

from fpt import PAPER_GROUPS
from fpt.cli import main
from fpt.experiments.plan import SweepConfig
from fpt.experiments.records import append_record
from fpt.experiments.report import ReportOptions, write_report
from fpt.experiments.settings import cell, mean_ci, select, steps_to_converge, welch
from fpt.experiments.sweep import SweepOptions, run_sweep
from fpt.freeze import GROUPS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(task, label, lr, seed, val, test, model="fpt", init="pretrained", groups=PAPER_GROUPS, **extra):
    """A synthetic sweep record: what the report reads, without training anything."""
    return {
        "run_id": f"{task}-{label}-{lr}-{seed}",
        "sweep": "synthetic",
        "task_label": task,
        "model_label": label,
        "axes": {},
        "status": "ok",
        "task": task,
        "model": model,
        "backbone": "minilm",
        "init": init,
        "train_groups": list(groups),
        "seed": seed,
        "lr": lr,
        "val_accuracy": val,
        "test_accuracy": test,
        "stopped_early": True,  # ended on a validation plateau
        "trainable_params": 1000 if model == "fpt" else 50_000,
        "curve": [
            {"step": 50, "val_accuracy": val / 2},
            {"step": 100, "val_accuracy": val * 0.96},
            {"step": 150, "val_accuracy": val},
        ],  # fmt: skip
        "environment": {
            "versions": {"torch": "2.13.0"},
            "hardware": {"cpu": "x"},
            "git": {"commit": "abc", "dirty": True},
        },
        **extra,
    }


def test_mean_ci_is_the_t_interval():
    m, half = mean_ci([0.9, 0.8, 0.85])
    t_975_2 = 4.302652729749462  # scipy.stats.t.ppf(0.975, 2), by hand: sd 0.05, n 3
    assert m == pytest.approx(0.85) and half == pytest.approx(t_975_2 * 0.05 / math.sqrt(3))
    assert cell([0.9, 0.8, 0.85]) == "85.0 ± 12.4 (n=3)"
    assert cell([0.9]) == "90.0 (n=1, no CI)" and mean_ci([0.9]) == (0.9, None)
    assert cell([0.9, 0.9], failed=1) == "90.0 ± 0.0 (n=2, 1 failed)" and cell([], failed=3) == "failed (n=0, 3 failed)"


def test_welch_interval_matches_scipy():
    diff, half = welch([0.9, 0.8, 0.85], [0.6, 0.7, 0.5, 0.65])
    # scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (diff - half, diff + half) == pytest.approx((0.10376980704900099, 0.37123019295099935))
    assert welch([0.9], [0.5, 0.6])[1] is None


def test_lr_is_chosen_on_validation_and_only_its_test_is_reported():
    records = [
        record("xor", "fpt", 1e-3, 0, val=0.90, test=0.50),
        record("xor", "fpt", 1e-3, 1, val=0.92, test=0.52),
        record("xor", "fpt", 1e-2, 0, val=0.80, test=0.99),  # best test, worse validation: must not be chosen
        record("xor", "fpt", 1e-2, 1, val=0.85, test=0.99),
        record("xor", "fpt", 1e-1, 0, val=1.00, test=1.00),  # best val, but a seed diverged
        {**record("xor", "fpt", 1e-1, 1, val=0, test=0), "status": "failed", "error": "loss became nan"},
    ]
    (setting,) = select(records)
    assert setting.lr == 1e-3 and setting.values("test_accuracy") == [0.50, 0.52]
    assert setting.cell() == cell([0.50, 0.52])

    # every lr failed once: then the mean val accuracy of the finished seeds decides
    records = [{**r, "status": "failed"} if r["lr"] == 1e-3 and r["seed"] == 0 else r for r in records]
    records = [r for r in records if r["lr"] != 1e-2]
    (setting,) = select(records)
    assert setting.lr == 1e-1 and setting.failed == 1 and setting.cell() == "100.0 (n=1, no CI, 1 failed)"


def test_lr_is_chosen_on_the_seeds_every_lr_ran():
    """A sweep with lr_selection first-seed ran seeds 1 and 2 at the lr seed 0 chose: the choice stays on seed 0, not
    on a mean over 3 seeds against a mean over 1."""
    records = [
        record("xor", "fpt", 1e-3, 0, val=0.90, test=0.90),
        record("xor", "fpt", 1e-3, 1, val=0.70, test=0.70),
        record("xor", "fpt", 1e-3, 2, val=0.70, test=0.70),  # mean val 0.767 over three seeds
        record("xor", "fpt", 1e-2, 0, val=0.80, test=0.99),  # 0.80 > 0.767, but seed 0 alone chose 1e-3
    ]
    (setting,) = select(records)
    assert setting.lr == 1e-3 and len(setting.ok) == 3


def test_steps_to_converge():
    assert steps_to_converge(record("xor", "fpt", 1e-3, 0, val=0.9, test=0.9)) == 100  # 0.864 ≥ 0.95 × 0.9
    assert steps_to_converge({"curve": []}) is None


def synthetic_records() -> list[dict]:
    out = []
    for task, shift in (("xor", 0.0), ("digits", -0.1)):
        for seed, noise in enumerate((0.0, 0.01, -0.01)):
            out += [
                record(task, "fpt-pretrained", 1e-3, seed, val=0.95 + shift + noise, test=0.94 + shift + noise),
                record(task, "fpt-random", 1e-3, seed, val=0.60 + noise, test=0.61 + noise, init="random"),
                record(task, "fpt-output", 1e-3, seed, val=0.7 + noise, test=0.7 + noise, groups=("output",)),
                record(task, "lstm", 3e-4, seed, val=0.9 - noise, test=0.9 - noise, model="lstm"),
            ]
    out.append(record("xor", "linear", 1e-3, 0, val=0.5, test=0.5, model="linear"))
    return out


def test_report_tables_and_answers(tmp_path):
    results = tmp_path / "results.jsonl"
    for r in synthetic_records():
        append_record(results, r)
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    for heading in (
        "## Answers",
        "## Table 1: model × task (test accuracy, %)",
        "## Pretraining modality: frozen backbone × task",
        "## Which parameters train: groups × task",
        "## Trained weights: model × task",
        "## Steps to converge",
        "## Learning-rate selection",
        "## Environment the numbers came from",
    ):
        assert heading in report
    assert "| fpt-pretrained | 1,000 | 1,000 |" in report  # the records carry no total_params: no share
    assert "| linear | 50,000 | – |" in report
    assert "token-embedding table" not in report  # the note on train: all only where a setting trains that group
    assert "| model \\ task | xor | digits |" in report
    assert "| fpt-pretrained | 94.0 ± 2.5 (n=3) | 84.0 ± 2.5 (n=3) |" in report  # sd 1 point: 4.303 / √3 = 2.48
    assert "| linear | 50.0 (n=1, no CI) | – |" in report
    assert "| minilm / random | 61.0 ± 2.5 (n=3) | 61.0 ± 2.5 (n=3) |" in report
    assert "| output | 70.0 ± 2.5 (n=3) | 70.0 ± 2.5 (n=3) |" in report
    # Welch: sd 1 point each, n 3 each → se √(2/3), df 4, t 2.776 → ± 2.27
    assert "| xor | minilm | 94.0 ± 2.5 (n=3) | 61.0 ± 2.5 (n=3) | +33.0 [+30.7, +35.3] | higher |" in report
    assert "| xor | fpt-pretrained 94.0 ± 2.5 (n=3) | +4.0 [+1.7, +6.3] (higher) | +44.0 (n=1: no interval) |" in report
    assert "| digits | fpt-pretrained 84.0 ± 2.5 (n=3) | -6.0 [-8.3, -3.7] (lower) | – |" in report
    assert "| xor | lstm | 0.0003 | 0.0003: 90.0 |" in report
    assert "abc (uncommitted changes)" in report and "torch: 2.13.0" in report
    for png in ("learning_curves.png", "accuracy_vs_params.png"):
        data = (tmp_path / "report" / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and imread(tmp_path / "report" / png).shape[2] == 4


def test_report_from_a_real_sweep_with_attention_maps(tiny_bert_dir, tmp_path, capsys):
    """A tiny sweep with bit-memory, then `fpt report`: tables, three PNGs, attention from the trained run."""
    sweep = SweepConfig(
        name="tiny",
        base={
            "backbone": "bert",
            "backbone_path": tiny_bert_dir,
            "batch_size": 16,
            "steps": 8,
            "eval_every": 4,
            "patience": None,
            "threads": 1,
        },  # fmt: skip
        tasks={
            "xor": {"task": "bit-xor", "task_args": {"train_size": 64, "val_size": 32, "test_size": 32}},
            "memory": {
                "task": "bit-memory",
                "task_args": {"n_bits": 100, "patch": 10, "train_size": 64, "val_size": 8, "test_size": 8},
            },  # fmt: skip
        },
        models={"fpt": {}, "fpt-random": {"init": "random"}, "linear": {"model": "linear"}},
        lr=[1e-3, 1e-2],
        seeds=[0, 1],
    )
    results = tmp_path / "results.jsonl"
    run_sweep(sweep, SweepOptions(results=results, quiet=True))
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    table1 = report.split("## Table 1")[1].split("##")[0]
    rows = [line for line in table1.splitlines() if line.startswith("| fpt") or line.startswith("| linear")]
    assert len(rows) == 3 and all(
        line.count("(n=2, 2 at cap)") == 2 and line.count(" ± ") == 2 for line in rows
    )  # tiny step budgets
    assert "through the trained input layer, layer norms and positions of run" in report
    for png in ("learning_curves.png", "accuracy_vs_params.png", "attention_bit_memory.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC) and f"({png})" in report
        assert imread(out / png).ndim == 3

    assert main(["report", str(results), "--out", str(tmp_path / "r2"), "--runs-dir", str(tmp_path / "none")]) == 0
    assert "through an untrained input layer" in (tmp_path / "r2" / "report.md").read_text()

    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"fpt: error: results not found: {tmp_path / 'missing.jsonl'}"


def test_report_reads_plain_result_folders(tiny_cfg, tmp_path):
    """Runs made with fpt train (no sweep labels) are reported too: labels come from model, backbone and init."""
    import fpt

    for init in ("pretrained", "random"):
        fpt.train(tiny_cfg(init=init, steps=4, eval_every=2), out=tmp_path / "runs" / init, quiet=True)
    report = write_report([tmp_path / "runs"], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    assert "| fpt bert/pretrained | " in report and "| fpt bert/random | " in report
    assert "(n=1, no CI)" in report and "n=1: no interval" in report


def test_cells_mark_seeds_that_ran_to_their_step_cap():
    """A run that used its whole step budget is not shown to have converged: its cell says how many seeds did."""
    runs = [record("xor", "fpt", 1e-3, seed, val=0.9, test=0.9) for seed in range(3)]
    runs[1]["stopped_early"] = False
    (setting,) = select(runs)
    assert setting.capped == 1 and setting.cell().endswith("(n=3, 1 at cap)")
    runs[1]["stopped_early"] = True
    assert select(runs)[0].cell() == cell([0.9] * 3)


def regression_record(task, label, lr, seed, val, test, model="fpt", **extra):
    """A synthetic forecasting record: error metrics, lower is better."""
    base = record(task, label, lr, seed, 0.0, 0.0, model=model, **extra)
    for key in ("val_accuracy", "test_accuracy"):
        base.pop(key)
    curve = [{"step": 50, "val_mase": 2 * val}, {"step": 100, "val_mase": val * 1.04}, {"step": 150, "val_mase": val}]
    return base | {"metric": "mase", "val_mase": val, "test_mase": test, "curve": curve}


def test_regression_tasks_choose_the_lowest_error_and_say_so(tmp_path):
    results = tmp_path / "results.jsonl"
    for seed in range(3):
        append_record(results, regression_record("airline", "fpt", 1e-3, seed, 0.9, 1.0 + seed / 10))
        append_record(results, regression_record("airline", "fpt", 1e-4, seed, 0.5, 0.6 + seed / 10))  # lower: chosen
        append_record(results, regression_record("airline", "linear", 1e-3, seed, 0.7, 0.8 + seed / 10, model="linear"))
    settings = select([r for r in map(__import__("json").loads, results.read_text().splitlines())])
    fpt_setting = next(s for s in settings if s.label == "fpt")
    assert fpt_setting.lr == 1e-4 and fpt_setting.cell() == "0.700 ± 0.248 (n=3)"  # sd 0.1: 4.303 × 0.1 / √3
    assert steps_to_converge(fpt_setting.chosen[0]) == 100  # 0.52 is within 0.5 / 0.95
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    assert "| model \\ task | airline (MASE, lower is better) |" in report
    assert (
        "| fpt | 0.700 ± 0.248 (n=3) |" in report
        and "| airline | fpt | 0.0001 | 0.0001: 0.500; 0.001: 0.900 |" in report
    )
    assert "-0.200 [" in report  # FPT − linear: lower error
    said = "On a task scored by an error (MASE) the cells and differences are that error, where lower is better"
    assert said in report and "| task | FPT (%, or error) |" in report  # the answers name the error, not accuracy


def test_a_small_error_keeps_three_significant_digits(tmp_path):
    """An MSE of 0.0018 is not shown as 0.002: error cells, differences and the lr table keep 3 significant digits
    below 0.1, and 3 decimals above."""
    from fpt.experiments.answers import difference
    from fpt.experiments.settings import digits_of

    assert [digits_of("mse", m) for m in (0.00184, 0.0213, 0.5, 12.0, None)] == [5, 4, 3, 3, 3]
    assert digits_of("accuracy", 0.001) == 1
    runs = [regression_record("covid", "fpt", 1e-3, seed, 0.001, 0.00184 + seed * 1e-5) for seed in range(3)]
    runs += [regression_record("covid", "ets", 1e-3, seed, 0.001, 0.0021, model="ets") for seed in range(3)]
    fpt_setting, ets = select(runs)
    assert fpt_setting.cell() == "0.00185 ± 0.00002 (n=3)"
    assert difference(fpt_setting, ets) == ("-0.00025 [-0.00027, -0.00023]", "lower (better)")  # t(2) 4.303 × 1e-5 / √3


def test_a_sweep_of_many_tasks_tabulates_a_row_per_task(tmp_path):
    """Past WIDE tasks (the time-series suite's 19 sets), the model tables turn: a row per task, a column per model."""
    from fpt.experiments.report import WIDE

    results = tmp_path / "results.jsonl"
    tasks = [f"set{i}" for i in range(WIDE + 1)]
    for task in tasks:
        for model in ("fpt", "linear"):
            append_record(results, record(task, model, 1e-3, 0, 0.8, 0.75, model=model))
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    assert "## Table 1: task × model (test accuracy, %)" in report
    assert "| task \\ model | fpt | linear |" in report
    assert all(f"| {task} | 75.0 (n=1, no CI) | 75.0 (n=1, no CI) |" in report for task in tasks)
    assert f"| mean over the {WIDE + 1} accuracy tasks | 75.0 | 75.0 |" in report
    append_record(results, record("set0", "fpt", 1e-3, 1, 0.8, 0.95))  # fpt: (95 + 75) / 2 on set0
    append_record(results, regression_record("airline", "fpt", 1e-3, 0, 0.5, 0.6))  # an error: not in the mean
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    assert "| airline (MASE, lower is better) | 0.600 (n=1, no CI) | – |" in report
    assert f"| mean over the {WIDE + 1} accuracy tasks | {(85 + 75 * WIDE) / (WIDE + 1):.1f} | 75.0 |" in report
    results.write_text("".join(line + "\n" for line in results.read_text().splitlines()[: 2 * WIDE]))
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    assert "## Table 1: model × task (test accuracy, %)" in report and "| fpt | 75.0 (n=1, no CI) |" in report


def test_the_language_model_question_is_answered_per_task(tmp_path):
    """FPT against its random init, no transformer blocks and one block trained from scratch (Tan et al.'s
    ablations), told apart by their configs; the ablations are not FPT rows themselves."""
    results = tmp_path / "results.jsonl"
    runs = [
        ("fpt", "fpt", "pretrained", 90, None),
        ("fpt-random", "fpt", "random", 80, None),
        ("no-lm", "fpt", "pretrained", 85, 0),
        ("one-layer", "transformer", "random", 92, 1),
    ]
    for label, model, init, test, layers in runs:
        groups = ("all",) if model == "transformer" else PAPER_GROUPS
        for seed in range(3):
            r = record("gun", label, 1e-3, seed, 0.9, (test + seed - 1) / 100, model, init, groups)
            append_record(results, {**r, "config": {"layers": layers}})
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    assert "## Which parameters train" not in report  # every FPT setting trains the paper's groups
    section = report.split("### Does the language model help?")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("| gun |")]
    assert rows == [
        "| gun | fpt 90.0 ± 2.5 (n=3) | +10.0 [+7.7, +12.3] (higher) | +5.0 [+2.7, +7.3] (higher) "
        "| -2.0 [-4.3, +0.3] (no clear difference) |"
    ]


def test_which_weights_should_train_compares_each_other_way_with_fpt(tmp_path):
    """Methods, other groups and full fine-tuning of the same pretrained, whole backbone, each against FPT on its task
    and backbone, with what it trains; a random-init setting, a truncated body and another backbone's are not rows."""
    results = tmp_path / "results.jsonl"
    adapter = ("input", "output", "adapter")
    runs = [
        ("fpt", PAPER_GROUPS, {}, "pretrained", "minilm", 90),
        ("lora-r8", adapter, {"method": "lora", "lora_rank": 8}, "pretrained", "minilm", 93),
        ("lora-ln", (*PAPER_GROUPS, "adapter"), {"method": "lora", "lora_rank": 8}, "pretrained", "minilm", 91),
        ("full", GROUPS, {}, "pretrained", "minilm", 85),  # train: all, recorded as every group, adapter included
        ("fpt-random", PAPER_GROUPS, {}, "random", "minilm", 80),
        ("no-lm", PAPER_GROUPS, {"layers": 0}, "pretrained", "minilm", 85),
        ("ia3-smollm2", adapter, {"method": "ia3"}, "pretrained", "smollm2", 70),
    ]  # fmt: skip
    for label, groups, config, init, backbone, test in runs:
        for seed in range(3):
            r = record("gun", label, 1e-3, seed, 0.9, (test + seed - 1) / 100, "fpt", init, groups)
            append_record(results, {**r, "backbone": backbone, "config": config})
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    section = report.split("### Which weights should train?")[1].split("###")[0]
    rows = [line.split(" | ")[2:4] + line.split(" | ")[7:9] for line in section.splitlines() if line.startswith("|")]
    assert rows[2:] == [
        ["lora-r8", "lora r=8", "+3.0 [+0.7, +5.3]", "higher |"],
        ["lora-ln", "lora r=8 + layernorm, positional", "+1.0 [-1.3, +3.3]", "no clear difference |"],
        ["full", "input, output, attention, feedforward, layernorm, positional, embedding", "-5.0 [-7.3, -2.7]",
         "lower |"],
    ]  # fmt: skip
    weights = report.split("## Trained weights")[1].split("\n## ")[0]
    assert "`embedding` group (under `train: all`) holds the backbone's token-embedding table" in weights
    groups = report.split("## Which parameters train")[1].split("\n## ")[0]
    labels = [line.split(" | ")[0].removeprefix("| ") for line in groups.splitlines()[4:] if line.startswith("|")]
    assert labels == [  # named as the answers name them: a method by its knob, full fine-tuning without "adapter"
        "lora r=8", "ia3", "input, output, layernorm, positional", "lora r=8 + layernorm, positional",
        "input, output, attention, feedforward, layernorm, positional, embedding",
    ]  # fmt: skip


def test_fpt_on_two_backbones_answers_a_task_in_adjacent_rows(tmp_path):
    """Two results files, FPT on minilm over tasks a and b and on smollm2 over a: each answer table lists a's two FPT
    rows together, then b's, whatever order the files hold them in."""
    first, second = tmp_path / "minilm.jsonl", tmp_path / "smollm2.jsonl"
    for seed in range(3):
        for task in ("a", "b"):
            append_record(first, record(task, "fpt", 1e-3, seed, 0.9, 0.9, config={"layers": None}))
            append_record(first, record(task, "linear", 1e-3, seed, 0.8, 0.8, model="linear", groups=("all",)))
            append_record(first, record(task, "no-lm", 1e-3, seed, 0.7, 0.7, config={"layers": 0}))
            append_record(first, record(task, "fpt", 1e-3, seed, 0.6, 0.6, init="random", config={"layers": None},
                                        run_id=f"{task}-random-{seed}", model_label="fpt-random"))  # fmt: skip
        append_record(second, record("a", "fpt-smollm2", 1e-3, seed, 0.95, 0.95, backbone="smollm2"))
    report = write_report([first, second], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    for title in ("Does a pretrained", "Where does FPT stand", "Does the language model help?"):
        section = report.split(f"### {title}")[1].split("\n#")[0]
        rows = [line.split(" | ")[:2] for line in section.splitlines() if line.startswith(("| a |", "| b |"))]
        labels = [(task.removeprefix("| "), cell.split()[0]) for task, cell in rows]
        if title == "Does a pretrained":  # FPT against its random init: only minilm has one
            assert labels == [("a", "minilm"), ("b", "minilm")], labels
        else:
            assert labels == [("a", "fpt"), ("a", "fpt-smollm2"), ("b", "fpt")], (title, labels)


def test_lr_selection_and_what_moved_list_a_tasks_settings_together(tmp_path):
    """Records that finished interleaved (two sweep processes, seeds waiting for an lr choice) still give the
    learning-rate table and the what-moved table a task's rows together, settings in their first-appearance order."""
    results = tmp_path / "results.jsonl"
    for task, label in (("a", "fpt"), ("b", "fpt"), ("a", "lora"), ("b", "ia3"), ("b", "lora"), ("a", "ia3")):
        cells = [{"group": "layernorm", "layer": 0, "relative_change": 0.1, "change_norm": 0.1, "initial_norm": 1.0}]
        append_record(results, record(task, label, 1e-3, 0, 0.9, 0.9, moved={"layers": 1, "cells": cells}))
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    order = ("fpt", "lora", "ia3")  # first appearance, whatever task it appeared on
    for title in ("## Learning-rate selection", "## What moved"):
        section = report.split(title)[1].split("\n#")[0]
        rows = [line.split(" | ")[:2] for line in section.splitlines() if line.startswith(("| a |", "| b |"))]
        assert [f"{task[2:]} {label}" for task, label in rows] == [f"{t} {m}" for t in "ab" for m in order]
    assert "| model \\ task | a | b |" in report  # table 1 keeps its own order: tasks as columns


def test_one_config_change_is_answered_per_task(tmp_path):
    """Settings on one task whose run configs differ in a single field (not lr or seed) are compared, the default
    value first whichever setting came first; two fields changed, or an init change (answered above), make no row."""
    results = tmp_path / "results.jsonl"
    runs = [
        ("bf16", {"precision": "bf16"}, 95),
        ("fp32", {"precision": "fp32"}, 97),
        ("bf16-nodrop", {"precision": "bf16", "dropout": 0.0}, 90),  # two fields from fp32, one from bf16
        ("random", {"precision": "fp32", "init": "random"}, 60),
    ]
    for label, config, test in runs:
        for seed in range(3):
            r = record("gun", label, 1e-3, seed, 0.9, (test + seed - 1) / 100, init=config.get("init", "pretrained"))
            append_record(results, {**r, "config": {"lr": 1e-3 * (seed + 1), "seed": seed, **config}})
    report = write_report([results], ReportOptions(out=tmp_path / "report", attention=False)).read_text()
    section = report.split("### What does one change of the config do?")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("| gun |")]
    assert rows == [
        "| gun | `precision`: fp32 → bf16 | fp32 97.0 ± 2.5 (n=3) | bf16 95.0 ± 2.5 (n=3) | -2.0 [-4.3, +0.3] "
        "| no clear difference |",
        "| gun | `dropout`: 0.1 → 0.0 | bf16 95.0 ± 2.5 (n=3) | bf16-nodrop 90.0 ± 2.5 (n=3) | -5.0 [-7.3, -2.7] "
        "| lower |",
    ]


def test_report_keeps_the_task_and_model_labels_asked_for(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    for r in synthetic_records():
        append_record(results, r)
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out), "--tasks", "xor", "--models", "lstm,fpt-pretrained",
                 "--no-attention"]) == 0  # fmt: skip
    report = (out / "report.md").read_text()
    assert (
        "| model \\ task | xor |\n|---|---|\n| fpt-pretrained | 94.0 ± 2.5 (n=3) |\n| lstm | 90.0 ± 2.5 (n=3) |\n"
        in report
    )
    assert "linear" not in report.split("## Table 1")[1].split("##")[0]
    capsys.readouterr()
    assert main(["report", str(results), "--out", str(out), "--models", "fpt-pretrained,gru"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "fpt: error: --models: no model labelled 'gru' in the results; their models are: fpt-pretrained, "
        "fpt-random, fpt-output, lstm, linear"
    )


def test_trained_weights_cell_gives_the_count_and_its_share():
    from fpt.experiments.settings import params_cell

    fpt = record("xor", "fpt", 1e-3, 0, 0.9, 0.9, total_params=22_713_216)  # fpt's 1,000 of minilm's weights
    full = record("xor", "full", 1e-3, 0, 0.9, 0.9, model="transformer", total_params=50_000)
    big = record("xor", "big", 1e-3, 0, 0.9, 0.9, trainable_params=230_056, total_params=22_588_840)
    cells = [params_cell(s) for s in select([fpt, full, big])]
    assert cells == ["1,000 (0.0044%)", "50,000 (100%)", "230,056 (1.02%)"]


def test_learning_curves_give_a_setting_one_colour_on_every_panel(tmp_path, monkeypatch):
    """A label keeps its colour across panels, also where a task lacks another label's runs (the time-series suite's
    forecasting panels have DLinear, its classification panels do not)."""
    from matplotlib.figure import Figure

    from fpt.experiments.plots import accuracy_vs_params, learning_curves

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: saved.append(fig))
    runs = [record("a", "linear", 1e-3, 0, 0.7, 0.7, model="linear"), record("a", "fpt", 1e-3, 0, 0.8, 0.8)]
    runs += [record("b", "fpt", 1e-3, 0, 0.9, 0.9)]
    learning_curves(select(runs), tmp_path / "curves.png")
    accuracy_vs_params(select(runs), tmp_path / "params.png")
    for fig in saved:
        colours = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                line = handle.lines[0] if hasattr(handle, "lines") else handle  # an errorbar's, or a plain line
                colours.setdefault(label.split(" ")[0], set()).add(line.get_color())
        assert colours == {"linear": {"C0"}, "fpt": {"C1"}}


def test_a_report_of_more_than_ten_settings_gives_each_its_own_colour_and_marker():
    """Matplotlib's colour cycle has ten colours: with eleven settings the first and the eleventh shared one (the
    methods comparison's fpt and unfreeze-top-down). Past ten the plots take tab20's, and past twenty a new marker."""
    from fpt.experiments.plots import colours, markers

    few = select([record("a", f"m{i}", 1e-3, 0, 0.7, 0.7) for i in range(3)])
    assert colours(few) == {"m0": "C0", "m1": "C1", "m2": "C2"}
    many = select([record("a", f"m{i}", 1e-3, 0, 0.7, 0.7) for i in range(45)])
    styles = {(colours(many)[s.label], markers(many)[s.label]) for s in many}
    assert len(styles) == 45
    assert len(set(colours(many).values())) == 20 and markers(many)["m0"] == "o" and markers(many)["m20"] == "s"


def test_a_figure_of_many_settings_has_one_legend_beside_its_panels(tmp_path, monkeypatch):
    """Eleven entries in a panel's legend hid its lines and points: past SHARED_LEGEND settings both figures draw one
    legend of labels beside the panels, and none inside them; fewer settings keep a legend in each panel."""
    from matplotlib.figure import Figure

    from fpt.experiments.plots import SHARED_LEGEND, accuracy_vs_params, learning_curves

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: saved.append(fig))
    for n in (SHARED_LEGEND, SHARED_LEGEND + 1):
        saved.clear()
        runs = [record(task, f"m{i}", 1e-3, 0, 0.7, 0.7) for task in ("a", "b") for i in range(n)]
        learning_curves(select(runs), tmp_path / "curves.png")
        accuracy_vs_params(select(runs), tmp_path / "params.png")
        for fig in saved:
            inside = [ax.get_legend() for ax in fig.axes if ax.get_visible() and ax.get_legend() is not None]
            if n > SHARED_LEGEND:
                assert not inside and len(fig.legends) == 1
                assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"m{i}" for i in range(n)]
            else:
                assert len(inside) == 2 and not fig.legends


def test_the_environment_names_each_cpu_kind_and_warns_when_runs_mix_them():
    from fpt.experiments.report import environment_lines

    def on(model: str, capability: str, seed: int) -> dict:
        r = record("bits", "fpt", 1e-3, seed, 0.9, 0.9)
        r["environment"]["hardware"] = {"cpu": "EPYC", "cpu_model": model, "cpu_capability": capability,
                                        "cpu_count": 2, "device": "cpu"}  # fmt: skip
        return r

    one = environment_lines([on("family 25 model 1", "AVX2", s) for s in range(2)])
    assert "- hardware: EPYC (family 25 model 1, AVX2) (2 cores), cpu" in one
    assert not any("machine kinds" in line for line in one)
    mixed = environment_lines(
        [on("family 25 model 1", "AVX2", 0), *(on("family 6 model 167", "AVX512", s) for s in (1, 2))]
    )
    assert ("- hardware: EPYC (family 6 model 167, AVX512) (2 cores), cpu (2 runs); "
            "EPYC (family 25 model 1, AVX2) (2 cores), cpu (1 run)") in mixed  # fmt: skip
    assert any(line.startswith("- the runs came from 2 machine kinds: a run repeats bit for bit") for line in mixed)
