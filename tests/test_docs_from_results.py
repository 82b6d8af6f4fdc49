"""The numbers and flags in README.md, docs/*.md and BENCHMARKS.md are renderings of committed results files and of
the CLI's own parser, not typed by hand; the README stays short and its links lead somewhere."""

import argparse
import re
import shlex
import subprocess
from fnmatch import fnmatch
from math import floor
from pathlib import Path

import pytest

from fpt.cli import build_parser, main
from fpt.experiments.answers import answers, change_answers
from fpt.experiments.report import ReportOptions, load_results, normalise, only, table
from fpt.experiments.settings import Setting, select, steps_to_converge
from fpt.performance import render as bench_render
from fpt.results import read_json

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = ("training", "baselines", "sweeps", "shipping", "performance", "reliability", "timeseries", "architecture")
MAIN_MODELS = ("fpt-pretrained", "fpt-random", "transformer", "lstm", "linear")  # converged suite, less the reservoir
PRECISION_TASKS = ("bit-xor", "digits", "gunpoint", "italy-power", "bit-memory")  # the precision check's tasks


def text(name: str) -> str:
    """README.md, BENCHMARKS.md, or a docs page by its stem ("sweeps" → docs/sweeps.md)."""
    path = ROOT / name if name.endswith(".md") else ROOT / "docs" / f"{name}.md"
    return path.read_text()


def flat(page: str) -> str:
    """The text with line breaks and runs of spaces as single spaces: a phrase may wrap."""
    return " ".join(page.split())


def pages() -> dict[str, str]:
    """README.md and every docs page: path relative to the root → text."""
    found = {"README.md": text("README.md")}
    found |= {f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
    return found


def assert_on_page(name: str, phrases: list[str]) -> None:
    page = flat(text(name))
    for phrase in phrases:
        assert phrase in page, phrase


# ---- result tables ------------------------------------------------------------------------------------------------


def rise(run: dict) -> float:
    """How much a run's best validation accuracy rose over its last 1,000 steps, in points."""
    before = max(c["val_accuracy"] for c in run["curve"] if c["step"] <= run["steps_run"] - 1000)
    return 100 * (max(c["val_accuracy"] for c in run["curve"]) - before)


def offline_suite_records() -> list:
    return select(normalise(load_results([ROOT / "results/offline-suite/offline-suite.jsonl"])))


def test_offline_suite_table_is_rendered_from_the_results_file():
    main_table = table(offline_suite_records(), lambda s: s.label, "model \\ task", Setting.cell)[0]
    assert main_table in text("sweeps")
    assert main_table in (ROOT / "results/offline-suite/report.md").read_text()


def test_offline_suite_pretrained_vs_random_rows_are_rendered_from_the_results_file():
    lines = answers(offline_suite_records())
    rows = [line for line in lines if line.startswith("| ") and line.split(" | ")[1] == "minilm"]
    assert len(rows) == 7  # one per task
    readme = text("sweeps")
    assert "beats its random init on five of seven tasks" in flat(text("README.md"))  # the README's one sentence
    assert all(row in readme for row in rows)
    # the sentences under the tables: five of seven higher; FPT never below the trained transformer; linear ahead on
    # the Fashion-MNIST subset by 14.5 points
    assert sum(row.endswith("| higher |") for row in rows) == 5
    assert "five of seven tasks" in flat(readme)
    versus = [line for line in lines if line.startswith("| ") and "| fpt-pretrained " in line]
    assert len(versus) == 7 and not any(line.split(" | ")[2].endswith("(lower)") for line in versus)
    fashion = next(line for line in versus if line.startswith("| fashion-mnist |"))
    assert fashion.split(" | ")[-1].startswith("-14.5 [") and fashion.endswith("(lower) |")
    assert "by 14.5 points" in flat(readme)


def test_readme_converged_suite_table_and_sentences_come_from_the_results_file():
    """The interim converged table (seed 0 so far) is the rendering of the committed records, and each figure the
    sentences under it quote is read off them: when more runs land, the table and the sentences are rendered anew."""
    from fpt.experiments.plan import Plan, load_sweep

    records = select(normalise(load_results([ROOT / "results/converged-suite/converged-suite.jsonl"])))
    main_table = table(records, lambda s: s.label, "model \\ task", Setting.cell)[0]
    readme = flat(text("README.md"))
    assert " ".join(main_table.split()) in readme
    assert main_table in (ROOT / "results/converged-suite/report.md").read_text()
    runs = sum(1 for _ in open(ROOT / "results/converged-suite/converged-suite.jsonl"))
    sweep = load_sweep(ROOT / "configs/converged-suite.yaml")
    assert f"({runs} of {Plan.of(sweep).total()} runs)" in readme
    test = {(s.label, s.task): 100 * sum(s.values("test_accuracy")) / len(s.ok) for s in records}
    for task in ("bit-xor", "bit-memory"):
        pretrained, random = test[("fpt-pretrained", task)], test[("fpt-random", task)]
        assert f"{pretrained:.1f}% against {random:.1f}%" in readme
    memory = {m: f"{test[(m, 'bit-memory')]:.1f}%" for m in ("transformer", "lstm", "reservoir", "linear")}
    assert (
        f"Only the fully trained transformer matches FPT there ({memory['transformer']}); the LSTM ({memory['lstm']}), "
        f"the reservoir ({memory['reservoir']}) and the random init stay near that level, and the linear model reaches "
        f"{memory['linear']}" in readme
    )
    bits = {s.label: s for s in records if s.task == "bit-memory"}
    fpt, random = bits["fpt-pretrained"], bits["fpt-random"]
    assert f"three seeds each; every seed of FPT above {floor(min(fpt.values('test_accuracy')) * 1000) / 10}%" in readme
    assert len(fpt.ok) == len(random.ok) == 3
    first = {label: {steps_to_converge(r) for r in bits[label].ok} for label in ("fpt-pretrained", "fpt-random")}
    assert first == {"fpt-pretrained": {750}, "fpt-random": {250}}  # the sentence's steps, on every seed
    assert "best came at step 750 on each seed; its random init's at step 250" in readme

    def moving(s):  # the most a seed's validation accuracy moved over its last 1,000 steps, in points
        tails = [[c["val_accuracy"] for c in r["curve"] if c["step"] >= r["steps_run"] - 1000] for r in s.ok]
        return f"{100 * max(max(t) - min(t) for t in tails):.2f}"

    assert all(not r["stopped_early"] and r["steps_run"] == 4000 for r in fpt.ok + random.ok)
    assert f"moving by at most {moving(fpt)} points over the last 1,000" in readme
    assert f"moving by at most {moving(random)} points at the copying level" in readme
    gap = max(
        abs(test[("fpt-pretrained", t)] - test[("transformer", t)]) for t in ("digits", "gunpoint", "italy-power")
    )
    assert f"within {gap:.1f} points of the fully trained transformer" in readme
    linear_gap = test[("fpt-pretrained", "digits")] - test[("linear", "digits")]
    assert f"a linear model comes within {linear_gap:.1f} points of it on digits" in readme

    shown = {(s.label, s.task): s.cell().split(" (")[0] for s in records}  # '82.1 ± 2.1'
    lo, fa = ({m: shown[(m, task)] for m in MAIN_MODELS} for task in ("listops", "fashion-mnist"))
    fashion = {s.label: s for s in records if s.task == "fashion-mnist"}
    above = {m: test[(m, "fashion-mnist")] - test[("fpt-pretrained", "fashion-mnist")] for m in ("lstm", "transformer")}
    assert (
        f"On ListOps and Fashion-MNIST FPT's mean is above its random init's (ListOps {lo['fpt-pretrained']} against "
        f"{lo['fpt-random']}, Fashion-MNIST {fa['fpt-pretrained']} against {fa['fpt-random']}), but FPT does not pass "
        f"the models that train every weight: the LSTM ({lo['lstm']} and {fa['lstm']}) and the fully trained "
        f"transformer ({lo['transformer']} and {fa['transformer']}) are level with it on ListOps and "
        f"{above['lstm']:.1f} and {above['transformer']:.1f} points above it on Fashion-MNIST, where the linear model "
        f"({fa['linear']}) ties FPT." in readme
    )
    assert test[("fpt-pretrained", "listops")] > test[("fpt-random", "listops")]  # what "above" says
    assert all(0 < gap < 3 for gap in above.values())
    assert abs(test[("fpt-pretrained", "listops")] - test[("lstm", "listops")]) < 3  # "level"
    assert abs(test[("fpt-pretrained", "fashion-mnist")] - test[("linear", "fashion-mnist")]) < 1  # "ties"

    fpt_fashion = fashion["fpt-pretrained"].ok
    assert all(not r["stopped_early"] for r in fpt_fashion)
    assert f"rising by up to {max(rise(r) for r in fpt_fashion):.1f} points over the last 1,000 steps" in readme


def test_smollm2_figures_come_from_its_record():
    from fpt.experiments.records import read_records

    records = read_records(ROOT / "results/smollm2-ablation/smollm2-ablation.jsonl")
    r = next(r for r in records if r["task_label"] == "bit-xor" and r["model_label"] == "default")
    solved = next(row["step"] for row in r["curve"] if row["val_accuracy"] == 1.0)
    shown = [
        f"FPT trains {r['trainable_params']:,} of its {r['total_params']:,} weights",
        f"validation accuracy {100 * r['val_accuracy']:.1f}% from step {solved:,}, test accuracy "
        f"{100 * r['test_accuracy']:.1f}% (one seed, stopped on a validation plateau at step {r['steps_run']:,}",
    ]
    assert r["stopped_early"] and r["config"]["lr"] == 1e-3 and r["config"]["batch_size"] == 16
    assert_on_page("training", shown)
    m = next(r for r in records if r["task_label"] == "bit-memory" and r["model_label"] == "default")
    val = {row["step"]: row["val_accuracy"] for row in m["curve"]}
    first_99 = min(step for step, acc in val.items() if acc >= 0.99)
    converged = read_records(ROOT / "results/converged-suite/converged-suite.jsonl")
    minilm = [r for r in converged if (r["task_label"], r["model_label"]) == ("bit-memory", "fpt-pretrained")]
    minilm_test = next(r["test_accuracy"] for r in minilm if r["lr"] == 3e-4 and r["seed"] == 0)  # the chosen lr
    assert m["stopped_early"] and m["config"]["lr"] == 1e-3 and m["config"]["task_args"]["n_bits"] == 100
    assert_on_page("README.md", [  # the README's summary of this page's section
        f"learns bit-XOR (test {100 * r['test_accuracy']:.1f}%) and the small bit-memory "
        f"({100 * m['test_accuracy']:.1f}%) under fpt's decoder defaults (one seed each;",
    ])  # fmt: skip
    assert_on_page("training", [
        f"from {100 * val[100]:.1f}% at step 100 (what copying the visible bits gives) to "
        f"{100 * val[first_99]:.1f}% at step {first_99:,}",
        f"peaks at {100 * m['val_accuracy']:.1f}% at step {m['best_step']:,}; test accuracy "
        f"{100 * m['test_accuracy']:.1f}% (one seed, stopped on a validation plateau at step {m['steps_run']:,})",
        f"{100 * (0.99 - m['test_accuracy']):.1f} points short of 99% and "
        f"{100 * (minilm_test - m['test_accuracy']):.1f} below minilm's {100 * minilm_test:.1f}% in the converged "
        "suite",
    ])  # fmt: skip
    d = next(r for r in records if r["task_label"] == "bit-memory" and r["model_label"] == "no-dropout")
    assert d["config"]["dropout"] == 0.0 and not d["stopped_early"] and d["steps_run"] == d["config"]["steps"]
    gaps = {round(100 * (r["val_accuracy"] - r["test_accuracy"]), 1) for r in (m, d)}
    shown = f"validation accuracy peaks at {100 * d['val_accuracy']:.1f}% at step {d['best_step']:,} and test accuracy "
    shown += "is "
    assert_on_page("training", [
        shown + f"{100 * d['test_accuracy']:.2f}% (one seed, at its {d['steps_run']:,}-step cap)",
        f"test accuracy sits {gaps.pop()} points below the best validation accuracy, which is picked among checkpoints "
        f"on {d['task_info']['split_sizes']['val']} examples",
    ])  # fmt: skip
    assert not gaps  # the same gap in both runs
    k = next(r for r in records if r["task_label"] == "bit-memory" and r["model_label"] == "no-dropout-4k")
    assert k["config"]["dropout"] == 0.0 and k["config"]["steps"] == 4000 and k["stopped_early"]
    untimed = [[{**row, "train_seconds": 0} for row in r["curve"]] for r in (k, d)]
    assert untimed[0][: len(untimed[1])] == untimed[1]  # the same seed: the same curve, step for step
    tie = next(row for row in k["curve"] if row["step"] == d["best_step"])
    assert tie["val_accuracy"] == k["val_accuracy"] and k["val_loss"] < tie["val_loss"]  # equal accuracy, lower loss
    assert_on_page("training", [
        f"it stops on a validation plateau at step {k['steps_run']:,}, where validation accuracy equals its "
        f"step-{d['best_step']:,} best at a lower loss, and test accuracy is {100 * k['test_accuracy']:.2f}%",
        f"one seed, {100 * (k['test_accuracy'] - m['test_accuracy']):.2f} points above the default's run",
    ])  # fmt: skip


def fault_figures() -> str:
    """The reliability figures, as the README and docs/reliability.md state them, from `make faults`' record."""
    r = read_json(ROOT / "results/reliability/faults.json")
    return (
        f"{r['cases']} fault cases tried, {r['refused']} refused with one line and every file left as it was, "
        f"{r['accepted']} accepted; {r['kill_points_identical']} of {r['kill_points']} random kill points resumed to "
        f"the unbroken run byte for byte"
    )


def test_reliability_figures_come_from_the_fault_record():
    r = read_json(ROOT / "results/reliability/faults.json")
    assert r["accepted"] == 0 and r["refused"] == r["cases"] == len([o for o in r["outcomes"] if o["kind"] != "kill"])
    assert r["kill_points"] >= 5 and r["kill_points_identical"] == r["kill_points"]
    for page in ("README.md", "reliability"):
        assert fault_figures() in flat(text(page)), page


def test_benchmarks_md_is_rendered_from_the_bench_record():
    record = read_json(ROOT / "results/bench/cpu.json")
    assert bench_render.render_markdown(record) == (ROOT / "BENCHMARKS.md").read_text()


def test_foundation_comparison_is_rendered_from_the_result_files():
    paths = sorted((ROOT / "results/foundation").glob("*-s[0-9]/result.json"))
    assert len(paths) == 12  # listops and bit-memory × pretrained, random × 3 seeds
    lines = answers(select(normalise(load_results(paths))))
    rows = [line for line in lines if line.startswith(("| bit-memory |", "| listops |"))]
    assert len(rows) == 2 and all("| higher |" in row for row in rows)
    sweeps = text("sweeps")
    assert all(row in sweeps for row in rows)


def test_fashion_fpt_vs_linear_rows_come_from_the_result_files():
    sweeps = text("sweeps")
    for name in ("fpt-2000", "fpt-4000", "linear-2000", "linear-4000"):
        record = read_json(ROOT / f"results/suite/fashion-{name}/result.json")
        steps = f"{record['steps']:,}"
        test, val = 100 * record["test_accuracy"], 100 * record["val_accuracy"]
        row = f"| {steps} | {test:.2f}% | {val:.1f}% ({record['best_step']}"
        assert row in sweeps, row


@pytest.mark.parametrize("run, label", [("bit-xor", "bit-xor"), ("digits", "digits"), ("gunpoint", "ucr:GunPoint")])
def test_default_run_rows_come_from_the_result_files(run, label):
    record = read_json(ROOT / f"results/foundation/{run}/result.json")
    test = f"{100 * record['test_accuracy']:.1f}%"
    steps = f"{record['best_step']} / {record['steps_run']}"
    params = f"{record['trainable_params']:,} / {record['total_params']:,} |"
    section = text("sweeps").split("### Default runs")[1]
    row = next(line for line in section.splitlines() if line.startswith(f"| {label} "))
    assert f"| {test}" in row and f"| {steps} |" in row and row.endswith(params), row


def test_reservoir_speed_up_comes_from_the_result_files():
    cached, uncached = (
        read_json(ROOT / f"results/suite/digits-output-{k}/result.json") for k in ("cached", "uncached")
    )
    ratio = cached["samples_per_second"] / uncached["samples_per_second"]
    assert round(ratio, -1) == 180
    assert "~180× faster" in flat(text("baselines"))


def test_serving_figures_come_from_the_verify_record():
    verify = {k: v for k, v in read_json(ROOT / "results/serve/verify.json").items() if k != "environment"}
    percents = [v["patch_percent_of_backbone"] for v in verify.values()]
    backbone_mb = {v["backbone_on_disk_bytes"] / 1e6 for v in verify.values()}
    assert all(v["reloaded_test_metrics_equal"] and v["served_predictions_equal"] for v in verify.values())
    assert max(v["served_max_abs_logit_diff"] for v in verify.values()) < 5e-6
    shown = f"{min(percents):.2f}–{max(percents):.2f}% of the backbone's {backbone_mb.pop():.1f} MB"
    assert shown in flat(text("shipping")), shown
    assert "logits within 5e-6" in flat(text("shipping"))


# ---- the speed figures on the performance page ------------------------------------------------------------------


def target(record: dict, name: str, shape: str) -> float:
    return next(t["value"] for t in record["targets"] if t["target"] == name and t["shape"] == shape)


def test_performance_headline_comes_from_the_bench_record():
    record = read_json(ROOT / "results/bench/cpu.json")
    speed = {s: target(record, "fpt_vs_reference_speed", s) for s in ("bit-memory", "long")}
    time = {s: target(record, "fpt_vs_full_time", s) for s in ("bit-memory", "long")}
    memory = {round(target(record, "fpt_vs_full_memory", s), 2) for s in ("bit-memory", "long")}
    reservoir = [target(record, "reservoir_vs_fpt_epoch", s) for s in ("bit-memory", "long")]
    assert len(memory) == 1  # "at both shapes"
    shown = [
        f"{speed['bit-memory']:.2f}× the reference's samples/s on bit-memory and {speed['long']:.2f}× at 512 tokens",
        f"{time['bit-memory']:.3f}× full fine-tuning's step time on bit-memory and {time['long']:.3f}× at 512 tokens",
        f"{memory.pop():.2f}× its peak memory at both shapes",
        f"a reservoir epoch is {reservoir[0]:,.0f}× / {round(reservoir[1], -1):,.0f}× faster",
    ]
    shapes = {shape["name"]: shape for shape in record["shapes"]}
    mfu = [100 * shapes[s]["rows"]["fpt"]["mfu"] for s in ("bit-memory", "long")]
    peak = [shapes[s]["matmul"]["flops_per_second"] / 1e9 for s in ("bit-memory", "long")]
    shown += [
        f"reaches {mfu[0]:.0f}% / {mfu[1]:.0f}% of the fp32 matmul rate",
        f"({peak[0]:.1f} / {peak[1]:.1f} GFLOP/s)",
        f"commit {record['environment']['git']['commit'][:7]}",
    ]
    other = {r: [100 * shapes[s]["rows"][r]["mfu"] for s in ("bit-memory", "long")] for r in ("reference", "full")}
    ratios = [shapes[s]["ratios"] for s in ("bit-memory", "long")]
    shown += [
        f"the SDPA reference {other['reference'][0]:.0f}% / {other['reference'][1]:.0f}% and full",
        f"fine-tuning {other['full'][0]:.0f}% / {other['full'][1]:.0f}%",
        f"(fpt {ratios[0]['fpt_vs_reference_eager_speed']:.2f}× its speed, "
        f"{ratios[0]['fpt_vs_reference_sdpa_speed']:.2f}×",
        f"({ratios[1]['fpt_vs_reference_sdpa_speed']:.2f}×; eager {ratios[1]['fpt_vs_reference_eager_speed']:.2f}×, "
        f"compiled {ratios[1]['fpt_vs_reference_compiled_speed']:.2f}×)",
    ]
    assert round(ratios[0]["fpt_vs_reference_sdpa_speed"], 2) == round(ratios[0]["fpt_vs_reference_compiled_speed"], 2)
    assert_on_page("performance", shown)


def test_performance_page_by_cpu_kind_and_paths_come_from_the_records():
    records = {
        f"results/bench/runs/{p.name}": read_json(p) for p in sorted((ROOT / "results/bench/runs").glob("*.json"))
    }
    assert bench_render.kinds_table(records) in text("performance")
    for path in ("dropout", "attention", "onednn", "chunking", "plain"):  # Zen 1 and Zen 4, bit-memory and long
        key = "fpt_plain_time" if path == "plain" else f"fpt_no_{path}_time"
        cells = " | ".join(f"{shape['ratios'][key]:.2f}" for name in PATH_RECORDS for shape in records[name]["shapes"])
        label = "all off (`fpt-plain`)" if path == "plain" else f"`{path}`"
        assert f"| {label} | {cells} |" in text("performance"), (label, cells)


def test_performance_bf16_accuracy_rows_come_from_the_precision_check():
    """fp32 vs bf16 at convergence: the report's one-change rows for FPT on the converged suite's fast tasks, from the
    precision check's bf16 runs and the converged suite's fp32 runs of the same configs."""
    files = [
        ROOT / "results/precision-check/precision-check.jsonl",
        ROOT / "results/converged-suite/converged-suite.jsonl",
    ]
    options = ReportOptions(out=ROOT, models="fpt-pretrained,fpt-bf16", tasks=",".join(PRECISION_TASKS))
    settings = select(only(normalise(load_results(files)), options))
    page = text("performance")
    table = [line for line in change_answers(settings) if line.startswith("|")]
    assert "\n".join(table) in page  # header, rule and rows: a table markdown renders
    rows = table[2:]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(PRECISION_TASKS)
    assert all(len(s.ok) == 3 for s in settings)
    for row in rows:
        assert row in page
    verdicts = {row.rsplit(" | ", 1)[1].removesuffix(" |") for row in rows}
    assert verdicts == {"no clear difference"}  # what the page concludes from them
    assert "On none of the five tasks does the interval exclude 0" in flat(page)
    fp32 = {
        (r["task_label"], r["lr"], r["seed"]): r["test_accuracy"]
        for r in load_results(files[1:])
        if r["model_label"] == "fpt-pretrained"
    }
    pairs = [
        (fp32[k], r["test_accuracy"])
        for r in load_results(files[:1])
        if (k := (r["task_label"], r["lr"], r["seed"])) in fp32
    ]
    assert f"{sum(a == b for a, b in pairs)} of the {len(pairs)} runs that share task, lr and seed" in flat(page)


def test_performance_bf16_table_comes_from_its_records():
    paths = sorted((ROOT / "results/bench/runs").glob("*-bf16.json"))
    records = {f"results/bench/runs/{p.name}": read_json(p) for p in paths}
    assert len(records) == 3 and bench_render.bf16_table(records) in text("performance")
    by_kind: dict[str, list[float]] = {}
    for record in records.values():
        for shape in record["shapes"]:
            by_kind.setdefault(record["environment"]["hardware"]["cpu_capability"], []).append(
                shape["ratios"]["bf16_vs_fpt_speed"]
            )
    native, emulated = by_kind["AVX512"], by_kind["AVX2"]
    page = flat(text("performance"))
    assert f"is {min(native):.1f}-{max(native):.1f}× faster" in page
    assert f"the same step is about {round(1 / max(emulated), -1):.0f}× slower" in page


PATH_RECORDS = (  # the one-thread minilm records whose ablation rows the performance page tabulates
    "results/bench/runs/2026-12-03T2135-3c8cfe7-epyc-f23m1.json",
    "results/bench/runs/2026-12-04T1844-ab8aa28-epyc-f25m17-quiet.json",
)


ONE_THREAD = ("1737-1a27ea8", "1753-ba779ff")  # results/bench/runs/2026-12-02T<name>.json
TWO_THREADS = ("1822-e5f252b-2-threads", "1844-42877ff-2-threads")
BIT, LONG = "bit-memory", "long"


@pytest.mark.parametrize(
    "runs, name, digits, shown",
    [
        ([(f, BIT) for f in ONE_THREAD], "fpt_vs_reference_speed", 2, "reference 1.53 and 1.45 on bit-memory"),
        ([(f, LONG) for f in ONE_THREAD], "fpt_vs_reference_speed", 2, "3.65 and 3.66 at 512 tokens"),
        ([(f, BIT) for f in ONE_THREAD], "fpt_vs_full_time", 3, "full 0.660 and 0.621"),
        ([(f, LONG) for f in ONE_THREAD], "fpt_vs_full_time", 3, "0.743 and 0.706"),
        ([(f, BIT) for f in TWO_THREADS], "fpt_vs_reference_speed", 2, "1.82 / 1.56 on bit-memory"),
        ([(f, LONG) for f in TWO_THREADS], "fpt_vs_reference_speed", 2, "3.50 / 3.45 at 512 tokens"),
        ([(f, BIT) for f in TWO_THREADS], "fpt_vs_full_time", 3, "0.630 / 0.659 on bit-memory"),
        ([(f, LONG) for f in TWO_THREADS], "fpt_vs_full_time", 3, "**0.751** / 0.671 at 512 tokens"),
        ([(f, s) for f in TWO_THREADS for s in (BIT, LONG)], "fpt_vs_full_memory", 3, "memory 0.581 / 0.579"),
        ([("1757-ba779ff-2-threads", LONG)], "fpt_vs_full_time", 2, "512-token ratio was 0.80"),
        ([("1403-d648958-compile-bit-memory", BIT)], "fpt_vs_reference_speed", 2, "ran at 0.88×"),
    ],
)
def test_performance_figures_of_earlier_bench_runs_come_from_their_records(runs, name, digits, shown):
    values = [target(read_json(ROOT / f"results/bench/runs/2026-12-02T{f}.json"), name, s) for f, s in runs]
    assert all(f"{v:.{digits}f}" in shown for v in values), (values, shown)
    assert shown in flat(text("performance")), shown


def test_performance_step_times_of_earlier_bench_runs_come_from_their_records():
    def seconds(run: str, row: str) -> str:
        record = read_json(ROOT / f"results/bench/runs/2026-12-02T{run}.json")
        shape = next(shape for shape in record["shapes"] if shape["name"] == LONG)
        return f"{shape['rows'][row]['step_seconds']:.2f}"

    first, second = TWO_THREADS
    shown = [
        f"fpt's 512-token step took {seconds(first, 'fpt')} s in the first and {seconds(second, 'fpt')} s in the "
        f"second, full fine-tuning's {seconds(first, 'full')} s and {seconds(second, 'full')} s",
        f"({seconds('1753-ba779ff', 'full')} → {seconds('1757-ba779ff-2-threads', 'full')} s)",
        f"({seconds('1753-ba779ff', 'fpt')} → {seconds('1757-ba779ff-2-threads', 'fpt')} s)",
    ]
    assert_on_page("performance", shown)


def test_performance_backward_products_come_from_their_record():
    record = read_json(ROOT / "results/bench/micro/frozen_backward_products.json")
    ways = ("onednn_transpose_view", "matmul", "onednn_contiguous_transpose")
    for name, times in record["products"].items():
        out, inn = times["weight"]
        cells = " | ".join(f"{times[way]:.1f}" for way in ways)
        assert f"| {name} ({out} × {inn}) | {cells} |" in text("performance"), name
    intermediate = record["products"]["minilm intermediate.dense"]
    ahead = intermediate["matmul"] / intermediate["onednn_transpose_view"] - 1
    assert f"(matmul took {100 * ahead:.0f}% longer)" in flat(text("performance"))


# ---- paths, links, flags, length ----------------------------------------------------------------------------------


def test_every_results_path_the_docs_cite_is_committed():
    """A results file, folder or glob that README.md or a docs page names matches a tracked file (a .gitignore
    pattern once hid results/bench/runs/, whose records the README cited, from every commit)."""
    cited = {
        path
        for page in pages().values()
        for path in re.findall(r"[`(](?:\.\./)?(results/[^`)\s]*)[`)]", page)  # files, folders and globs alike
    }
    assert {"results/bench/cpu.json", "results/bench/runs/", "results/bench/runs/*-compile-*.json"} <= cited
    assert "results/offline-suite/learning_curves.png" in cited
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "results"], capture_output=True, text=True, check=True
    ).stdout.split()
    missing = [path for path in sorted(cited) if not any(fnmatch(t, path) or t.startswith(path) for t in tracked)]
    assert not missing, missing


def test_readme_is_a_five_minute_read():
    assert len(text("README.md").splitlines()) < 250


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_page_the_readme_links_exists_and_every_link_and_anchor_resolves():
    readme_links = set(re.findall(r"\]\((docs/[^)#]+\.md)", text("README.md")))
    assert readme_links == {f"docs/{p}.md" for p in DOC_PAGES}
    for name, page in pages().items():
        for target_path, anchor in re.findall(r"\]\(([^)#\s:]*)(?:#([^)\s]+))?\)", page):
            target_file = (ROOT / name).parent / target_path if target_path else ROOT / name
            assert target_file.exists(), f"{name} links to {target_path}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", target_file.read_text(), flags=re.M)
                assert anchor in {slug(h) for h in headings}, f"{name} links to {target_path}#{anchor}"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_fpt_command_line_in_the_docs_uses_existing_flags():
    """Each `fpt <command> ...` line of a code block in README.md or a docs page names a real command and only its
    real options."""
    commands = subcommands()
    checked = 0
    for name, page in pages().items():
        for block in re.findall(r"^```\n(.*?)^```", page, flags=re.M | re.S):
            for line in block.splitlines():
                match = re.search(r"(?:^|\s)fpt (\w+)(.*)", line.split(" # ")[0].split("  #")[0])
                if not match:
                    continue
                command, rest = match.groups()
                assert command in commands, f"{name}: fpt {command}"
                options = commands[command]._option_string_actions
                for flag in re.findall(r"(?<!\S)(--[\w-]+)", rest):
                    assert flag in options, f"{name}: fpt {command} {flag}"
                checked += 1
    assert checked >= 25


def documented_train_commands() -> list[tuple[str, str]]:
    """Every `fpt train ...` line of a code block in README.md or a docs page, as (page:line, command without its
    comment); a command that reads a config file of the reader's own (`--config my.yaml`) is left out."""
    found = []
    for name, page in pages().items():
        in_code = False
        for number, line in enumerate(page.splitlines(), 1):
            in_code = in_code != line.startswith("```")
            if in_code and line.startswith("fpt train ") and "--config" not in line:
                found.append((f"{name}:{number}", re.split(r"\s{2,}#", line)[0]))
    return found


@pytest.mark.parametrize("command", [pytest.param(c, id=where) for where, c in documented_train_commands()])
def test_every_train_command_in_the_docs_resolves_to_a_config(command, capsys):
    """Beyond existing flags, their values: each `fpt train` line the docs show resolves (`--print-config`, nothing
    trains), so a renamed method, group or task breaks it here."""
    assert main([*shlex.split(command)[1:], "--print-config"]) == 0, capsys.readouterr().err


def test_the_docs_show_train_commands():
    commands = [command for _, command in documented_train_commands()]
    assert len(commands) >= 20 and any("--method lora" in c for c in commands)


def test_every_backticked_flag_in_the_docs_is_an_fpt_option():
    """`--flag` in backticks anywhere in README.md or a docs page is an option of some fpt command (launcher flags
    such as torchrun's stay inside code blocks)."""
    options = {flag for parser in subcommands().values() for flag in parser._option_string_actions}
    for name, page in pages().items():
        for flag in re.findall(r"`(--[\w-]+)", page):
            assert flag in options, f"{name}: {flag}"
    train = subcommands()["train"]._option_string_actions
    rows = [line for line in text("training").splitlines() if line.startswith("| `--")]
    assert len(rows) >= 15
    for row in rows:
        for flag in re.findall(r"`(--[\w-]+)", row.split(" | ")[0]):
            assert flag in train, flag


def test_time_series_recipe_choice_comes_from_its_results_file():
    from fpt.experiments.records import read_records

    records = read_records(ROOT / "results/ts-recipe/ts-recipe.jsonl")
    by_recipe: dict[str, list[float]] = {}
    for r in records:
        recipe = r["task_label"].partition("-")[2] or "base"
        by_recipe.setdefault(recipe, []).append(r["val_accuracy"])
    means = {k: sum(v) / len(v) for k, v in by_recipe.items()}
    assert all(len(v) == 4 for v in by_recipe.values()) and max(means, key=means.get) == "base"
    page = flat(text("timeseries"))
    for recipe, words in (("base", "mean readout"), ("instance", "instance normalisation"), ("32", "32 tokens"),
                          ("last", "last-token readout")):  # fmt: skip
        assert f"{words} {means[recipe]:.3f}" in page, recipe
    sets = [name.removeprefix("ucr:") for name in dict.fromkeys(r["task"] for r in records)]
    assert f"the validation splits of {', '.join(sets[:-1])} and {sets[-1]}" in flat(text("README.md"))


def test_performance_page_states_the_zen1_default_from_its_record():
    """On AVX2 the default leaves oneDNN's products off: the page's figures are that record's fpt-no-onednn row."""
    record = read_json(ROOT / "results/bench/runs/2026-12-03T2135-3c8cfe7-epyc-f23m1.json")
    cells = {"time": [], "memory": [], "speed": []}
    for shape in record["shapes"]:
        rows = shape["rows"]
        row, full = rows["fpt-no-onednn"], rows["full"]
        best = max(rows[n]["samples_per_second"] for n in ("reference", "reference-eager", "reference-compiled"))
        cells["time"].append(f"{row['step_seconds'] / full['step_seconds']:.3f}×")
        cells["memory"].append(f"{row['peak_bytes'] / full['peak_bytes']:.3f}×")
        cells["speed"].append(f"{row['samples_per_second'] / best:.2f}×")
    page = " ".join(text("performance").split())
    assert " / ".join(cells["time"]) + " full fine-tuning's step time" in page
    assert " / ".join(cells["memory"]) + " its peak memory" in page
    assert " / ".join(cells["speed"]) + " the fastest reference's samples/s" in page


def test_performance_page_quiet_long_and_smollm2_figures_come_from_their_records():
    runs = ROOT / "results/bench/runs"
    busy, quiet = (
        read_json(runs / "2026-12-04T1548-fa57051-epyc-f25m17.json"),
        read_json(runs / "2026-12-04T1634-64be22a-epyc-f25m17-long-quiet.json"),
    )
    longs = [next(s for s in r["shapes"] if s["name"] == "long")["rows"] for r in (quiet, busy)]
    fpt, full = ([rows[n]["step_seconds"] for rows in longs] for n in ("fpt", "full"))
    idle = read_json(ROOT / "results/bench/cpu.json")
    idle_long, busy_long = (next(s for s in r["shapes"] if s["name"] == "long")["rows"] for r in (idle, busy))
    idle_long_speed, busy_long_speed = (target(r, "fpt_vs_reference_speed", "long") for r in (idle, busy))
    paths = read_json(runs / "2026-12-04T1904-ab8aa28-epyc-f25m17-long-paths.json")["shapes"][0]
    rerun, rerun_fpt = paths["ratios"], paths["rows"]["fpt"]["step_seconds"]
    smol = read_json(runs / "2026-12-04T1611-64be22a-epyc-f25m17-smollm2.json")
    rows, ratios = smol["shapes"][0]["rows"], smol["shapes"][0]["ratios"]
    mib = [f"{rows[n]['peak_bytes'] / 2**20:,.0f}" for n in ("fpt", "reference")]
    assert_on_page("performance", [
        f"{fpt[0] / full[0]:.3f}, met",
        f"fpt's step by {100 * (fpt[1] / fpt[0] - 1):.0f}% ({fpt[0]:.2f} → {fpt[1]:.2f} s)",
        f"full fine-tuning's by {100 * (full[1] / full[0] - 1):.0f}% ({full[0]:.2f} → {full[1]:.2f} s)",
        f"from {idle_long['reference']['step_seconds']:.2f} s (the idle record) to "
        f"{busy_long['reference']['step_seconds']:.2f} s",
        f"speed ratio at 512 tokens ({busy_long_speed:.2f}) overstates what an idle machine gives "
        f"({idle_long_speed:.2f})",
        f"but at {rerun['fpt_no_dropout_time']:.2f} (dropout), {rerun['fpt_no_onednn_time']:.2f} (oneDNN) and "
        f"{rerun['fpt_no_chunking_time']:.2f} (chunking)",
        f"{idle_long['fpt']['step_seconds']:.2f} s in the full record, {rerun_fpt:.2f} s in the re-run",
        f"{ratios['fpt_vs_full_time']:.3f} of full fine-tuning's step time, {ratios['fpt_vs_full_memory']:.3f} of its",
        f"a reservoir epoch {ratios['reservoir_vs_fpt_epoch']:,.0f}× faster",
        f"only {ratios['fpt_vs_reference_speed']:.2f}× the fastest reference's speed",
        f"{rows['fpt']['flops_per_step'] / rows['reference']['flops_per_step']:.2f}× the reference's FLOPs",
        f"{100 * rows['fpt']['mfu']:.0f}% / {100 * rows['reference']['mfu']:.0f}% of the matmul rate",
        f"memory ({mib[0]} vs {mib[1]} MiB)",
    ])  # fmt: skip


def test_paper_bit_memory_figures_come_from_its_record():
    from fpt.experiments.records import read_records
    from fpt.experiments.settings import steps_to_converge

    records = read_records(ROOT / "results/paper-bit-memory/paper-bit-memory.jsonl")
    r = next(r for r in records if r["model_label"] == "fpt-pretrained")
    val = {row["step"]: row["val_accuracy"] for row in r["curve"]}
    converged, batch = steps_to_converge(r), r["config"]["batch_size"]
    last = [v for step, v in val.items() if step > r["steps_run"] - 2500]
    assert r["config"]["lr"] == 1e-3 and batch == 16 and r["task_info"]["params"]["n_bits"] == 1000
    assert not r["stopped_early"] and max(last) - min(last) < 0.001  # "moving by hundredths of a point"
    assert_on_page("sweeps", [
        f"reaches {100 * val[750]:.1f}% validation accuracy per bit at step 750, {100 * val[1000]:.1f}% at step 1,000 "
        f"and {100 * r['val_accuracy']:.2f}% at step {r['best_step']:,}; test accuracy {100 * r['test_accuracy']:.2f}%",
        f"it ran to its {r['steps_run']:,}-step cap",
        f"the first validation within 95% of the best came at step {converged:,}, after {converged * batch:,} examples",
    ])  # fmt: skip
    rnd = next(r for r in records if r["model_label"] == "fpt-random")
    first = rnd["curve"][0]
    assert rnd["config"] | {"init": "pretrained"} == r["config"] and rnd["stopped_early"]
    assert_on_page("sweeps", [
        f"validation {100 * first['val_accuracy']:.1f}% at step {first['step']} and at best "
        f"{100 * rnd['val_accuracy']:.1f}% (step {rnd['best_step']:,}), test {100 * rnd['test_accuracy']:.1f}%, "
        f"stopped on a plateau at step {rnd['steps_run']:,}",
    ])  # fmt: skip
    assert_on_page("README.md", [  # the README's summary of the sweeps page's section
        f"reaches {100 * r['test_accuracy']:.2f}% test accuracy per bit, its random init "
        f"{100 * rnd['test_accuracy']:.1f}%, what copying the visible bits gives (one seed each;",
    ])  # fmt: skip


def test_time_series_suite_tables_and_sentences_come_from_its_results_file():
    """The README's classification table and the figures under it, and docs/timeseries.md's forecasting table and
    its sentences, are read off results/ts-suite/ts-suite.jsonl: when the records change, these fail."""
    from fpt.experiments.answers import difference, is_fpt, lm_answers
    from fpt.experiments.plan import Plan, load_sweep
    from fpt.experiments.records import read_records

    files = [ROOT / "results/ts-suite/ts-suite.jsonl", ROOT / "results/ts-suite/ts-suite-smollm2.jsonl"]
    settings = select(normalise(load_results(files[:1])))
    both = select(normalise(load_results(files)))  # with FPT on smollm2, the README table's second column
    for file, config, total in zip(files, ("ts-suite", "ts-suite-smollm2"), (446, 30), strict=True):
        runs = sum(1 for _ in open(file))
        assert runs == Plan.of(load_sweep(ROOT / f"configs/{config}.yaml")).total() == total  # the sweep is complete
    readme, page = flat(text("README.md")), flat(text("timeseries"))
    assert "446 of 446 runs" in readme and "446 runs" in page and "30 of 30 runs" in readme and "30 runs" in page
    order = ["fpt", "fpt-smollm2", "minirocket", "dtw-1nn"]
    main = sorted((s for s in both if s.metric == "accuracy" and s.label in order), key=lambda s: order.index(s.label))
    classification = table(main, lambda s: s.label, "model \\ task", Setting.cell, True, mean_row=True)[0]
    assert classification in text("README.md")
    errors = [s for s in settings if s.metric != "accuracy" and s.label in (*order, "seasonal-naive", "dlinear", "ets")]
    assert table(errors, lambda s: s.label, "model \\ task", Setting.cell, True)[0] in text("timeseries")

    get = {(s.task, s.label): s for s in both}
    acc = {key: 100 * sum(s.values("test_accuracy")) / len(s.ok) for key, s in get.items() if s.metric == "accuracy"}
    sets = [s.task for s in main if s.label == "fpt"]
    mean = {m: sum(acc[(t, m)] for t in sets) / len(sets) for m in order}
    assert f"by {mean['minirocket'] - mean['fpt']:.1f} points ({mean['fpt']:.1f} against {mean['minirocket']:.1f}; " \
           f"1-NN DTW {mean['dtw-1nn']:.1f})" in readme  # fmt: skip
    assert f"{mean['fpt']:.1f}% against MiniRocket's {mean['minirocket']:.1f}%" in page

    def versus(task: str, label: str) -> tuple[float, float, float, str]:
        diff, verdict = difference(get[(task, "fpt")], get[(task, label)])
        d, lo, hi = (float(x) for x in diff.replace("[", "").replace("]", "").replace(",", "").split())
        return d, lo, hi, verdict

    below = {
        "acsf1": "ACSF1",
        "arrowhead": "ArrowHead",
        "osuleaf": "OSULeaf",
        "pickupgesturewiimotez": "PickupGestureWiimoteZ",
    }
    level = [t for t in sets if versus(t, "minirocket")[3] == "no clear difference"]
    assert len(level) == 6 and sorted(set(sets) - set(level)) == sorted(below)
    for task, name in below.items():
        d, lo, hi, _ = versus(task, "minirocket")
        assert f"{name} by {-d:.1f} [{-hi:.1f}, {-lo:.1f}]" in readme
        assert (
            f"{name} (−{-d:.1f} points [−{-lo:.1f}, −{-hi:.1f}])" in page
            or f"{name} (−{-d:.1f} [−{-lo:.1f}, −{-hi:.1f}])" in page
        )
    for label, words in (("one-layer", "one trained transformer layer"), ("no-transformer", "the input layer alone")):
        shown = ", ".join(f"{acc[(t, label)]:.1f}" for t in below)
        assert f"{words} ({shown})" in readme, label
    info = {t: get[(t, "fpt")].first["task_info"] for t in sets}
    assert (
        ", ".join(str(info[t]["patch"]) for t in below) == "92, 16, 27, 23"
        and "a patch of 92, 16, 27 and 23 steps" in page
    )
    assert max(info[t]["patch"] for t in level) == 10 and min(info[t]["patch"] for t in level) == 2
    train = [info[t]["split_sizes"]["train"] for t in below]
    assert f"({min(train)}-{max(train)} series after the validation split)" in page

    # forecasting: the best baseline per set, and FPT against it
    forecasters = ("seasonal-naive", "dlinear", "ets")
    best = {}
    for task in ("airline", "lynx", "shampoosales", "uschange", "solar", "pbs", "m1-yearly"):
        mase = {b: sum(get[(task, b)].values("test_mase")) / 3 for b in forecasters}
        best[task] = min(mase, key=mase.get)
    assert versus("uschange", best["uschange"])[3] == "lower (better)" and best["uschange"] == "ets"
    d, lo, hi, _ = versus("uschange", "ets")
    assert f"Uschange (ETS, by {-d:.3f} MASE [{-hi:.3f}, {-lo:.3f}])" in page
    assert all(versus(t, best[t])[3] == "no clear difference" for t in ("lynx", "m1-yearly"))
    worse = {"airline": "Airline (DLinear", "shampoosales": "ShampooSales (seasonal naive",
             "solar": "solar (seasonal naive", "pbs": "PBS (seasonal naive"}  # fmt: skip
    for task, words in worse.items():
        d, _, _, verdict = versus(task, best[task])
        assert verdict == "higher (worse)" and f"{words}, by {d:.3f})" in page, task
    for task in ("covid3month", "cardanosentiment"):
        assert versus(task, "minirocket")[3] == "no clear difference" and versus(task, "dtw-1nn")[3] == "lower (better)"

    sizes = {t: get[(t, "fpt")].first["task_info"]["split_sizes"] for t in best}
    assert sizes["shampoosales"] == {"train": 11, "val": 2, "test": 2} and sizes["m1-yearly"]["train"] == 744
    others = [sizes[t]["train"] for t in best if t not in ("shampoosales", "m1-yearly")]
    assert f"the others {min(others)}-{max(others)}" in page
    trained = ("fpt", "fpt-random", "no-transformer", "one-layer")
    early = {t for t in best if all(r["best_step"] <= 100 for m in trained for r in get[(t, m)].ok)}
    assert early == {"shampoosales", "uschange"} and "lowest validation error at step 50 or 100" in page

    # does the language model help: FPT − random init, no transformer, one trained layer, over the 19 sets
    rows = [line.split(" | ")[2:] for line in lm_answers(settings) if line.startswith("| ") and " | fpt " in line]
    assert len(rows) == 19 == sum(is_fpt(s) for s in settings)
    verdicts = [[cell.removesuffix(" |").rpartition(" (")[2] for cell in r] for r in rows]
    better = [sum(v[i] in ("higher)", "better))") for v in verdicts) for i in range(3)]
    worse_n = [sum(v[i] in ("lower)", "worse))") for v in verdicts) for i in range(3)]
    assert better == [3, 8, 1] and max(worse_n) <= 1
    assert "FPT beats its random init on 3, no transformer on 8, and one trained layer on 1" in readme
    assert "costs accuracy on 8 of the 19 sets" in page

    # FPT on smollm2 (one lr, 1e-3, no search) against FPT on minilm, MiniRocket and one trained layer, per set
    name = {t: get[(t, "fpt")].first["task"].removeprefix("ucr:") for t in sets}

    def against(label: str) -> dict[str, list[tuple[str, str]]]:
        verdicts: dict[str, list[tuple[str, str]]] = {"higher": [], "lower": [], "no clear difference": []}
        for t in sets:
            diff, verdict = difference(get[(t, "fpt-smollm2")], get[(t, label)])
            verdicts[verdict].append((name[t], diff))
        return verdicts

    minilm, rocket, layer = against("fpt"), against("minirocket"), against("one-layer")
    assert f"averages {mean['fpt-smollm2']:.1f}% (FPT on minilm {mean['fpt']:.1f}%), level with minilm on " \
           f"{len(minilm['no clear difference'])} sets, above it on PickupGestureWiimoteZ " \
           f"({dict(minilm['higher'])['PickupGestureWiimoteZ']}), below on JapaneseVowels and Covid3Month_disc; " \
           f"MiniRocket leads by {mean['minirocket'] - mean['fpt-smollm2']:.1f}." in readme  # fmt: skip
    assert [n for n, _ in minilm["higher"]] == ["PickupGestureWiimoteZ"]
    assert sorted(n for n, _ in minilm["lower"]) == ["Covid3Month_disc", "JapaneseVowels"]
    for verdicts, words in ((minilm, "FPT on minilm"), (rocket, "MiniRocket"), (layer, "one trained layer")):
        shown = ", ".join(f"{n} ({d})" for n, d in verdicts["lower"])
        assert f"below {words} on {shown}" in page, words
        assert not verdicts["higher"] or words == "FPT on minilm"
    small = mean["fpt-smollm2"]
    means = f"{small:.1f}% against {mean['fpt']:.1f}% on minilm and MiniRocket's {mean['minirocket']:.1f}%"
    assert means in page
    spread = {t: sorted(100 * v for v in get[(t, "fpt-smollm2")].values("test_accuracy")) for t in sets}
    assert f"ACSF1's three seeds reached {spread['acsf1'][0]:.1f}, {spread['acsf1'][1]:.1f} and " \
           f"{spread['acsf1'][2]:.1f}%" in page  # fmt: skip
    low, high = min(get[("acsf1", "fpt")].values("test_accuracy")), max(get[("acsf1", "fpt")].values("test_accuracy"))
    italy = spread["italypowerdemand"]
    assert f"(minilm's {100 * low:.1f}-{100 * high:.1f}%), ItalyPowerDemand's {italy[0]:.1f}-{italy[-1]:.1f}%" in page
    gains = [acc[(t, "fpt-smollm2")] - acc[(t, "fpt")] for t in ("osuleaf", "pickupgesturewiimotez")]
    short = [acc[(t, "minirocket")] - acc[(t, "fpt-smollm2")] for t in ("osuleaf", "pickupgesturewiimotez")]
    assert f"smollm2's mean is {gains[0]:.1f} and {gains[1]:.1f} points higher (OSULeaf's interval includes 0) and " \
           f"still {short[0]:.1f} and {short[1]:.1f} points below MiniRocket" in page  # fmt: skip
    assert "OSULeaf" in dict(minilm["no clear difference"])  # its interval includes 0
    minutes = [r["train_seconds"] / 60 for t in sets for r in get[(t, "fpt-smollm2")].ok]
    assert f"({min(minutes):.0f}-{max(minutes):.0f} minutes here)" in page
    assert {r["lr"] for t in sets for r in get[(t, "fpt-smollm2")].ok} == {1e-3} and "lr 1e-3" in page

    # the 64-token probe on the four sets short of MiniRocket: seed 0 of the suite against seed 0 at 64 tokens
    probe = read_records(ROOT / "results/ts-tokens-probe/ts-tokens-probe.jsonl")
    assert len(probe) == 4 and all(r["lr"] == 3e-4 and r["seed"] == 0 for r in probe)
    assert [r["task_info"]["patch"] for r in probe] == [23, 4, 7, 6]
    for r in probe:
        task = r["task_label"].removesuffix("-64")
        (suite,) = [s for s in get[(task, "fpt")].ok if s["seed"] == 0]
        assert suite["lr"] == 3e-4
        shown = f"{100 * suite['test_accuracy']:.1f} to {100 * r['test_accuracy']:.1f}% on {below[task]}"
        assert shown in page, shown


def test_methods_comparison_table_and_sentences_come_from_its_results_file():
    """The README's methods table (minilm: the tasks whose runs have all finished, the four fast tasks and bit-memory
    at least) and every figure of the paragraphs under it are read off the results file
    results/methods-comparison/methods-comparison.jsonl: each difference they name is one whose 95% interval excludes
    0, and they name every such one; a task's paragraph is checked once its runs have all finished."""
    from fpt.backbones.bert import minilm_dir
    from fpt.experiments.answers import difference
    from fpt.experiments.moved import setting_cells
    from fpt.experiments.plan import Plan, load_sweep
    from fpt.experiments.records import read_records
    from fpt.experiments.settings import lr_rank

    path = ROOT / "results/methods-comparison/methods-comparison.jsonl"
    fast = ("bit-xor", "digits", "gunpoint", "italy-power")
    minilm = [s for s in select(normalise(load_results([path]))) if s.first["backbone"] == "minilm"]
    tasks = {s.task: [x for x in minilm if x.task == s.task] for s in minilm}
    done = [t for t, cells in tasks.items() if len(cells) == 11 and all(len(s.ok) == 3 and not s.failed for s in cells)]
    assert {*fast, "bit-memory"} <= set(done)
    settings = [s for s in minilm if s.task in done]
    get = {(s.task, s.label): s for s in settings}
    weights = {s.label: s.first["trainable_params"] for s in settings if s.task == "digits"}
    shown = table(settings, lambda s: f"{s.label} ({weights[s.label]:,})", "method (weights trained on digits) \\ task",
                  Setting.cell)[0]  # fmt: skip
    readme = flat(text("README.md"))
    assert shown in text("README.md")
    runs = len({r["run_id"] for r in read_records(path)})
    total = Plan.of(load_sweep(ROOT / "configs/methods-comparison.yaml")).total()
    count = f"{runs} of {total} runs so far" if runs < total else f"every run has finished ({runs} of {total})"
    assert count in readme

    names = {"ln-tuning": "LN tuning", "bitfit": "BitFit", "ia3": "(IA)³", "lora-r1": "LoRA r=1",
             "prompt-16": "prompt tuning", "full": "full fine-tuning",
             "unfreeze-top-down": "gradual unfreezing"}  # fmt: skip
    everywhere = {(s.task, s.label): difference(s, get[(s.task, "fpt")]) for s in settings if s.label != "fpt"}
    versus = {key: v for key, v in everywhere.items() if key[0] in fast}
    clear = {key: v for key, v in versus.items() if v[1] != "no clear difference"}
    for (_, label), (diff, _) in clear.items():
        assert f"{names[label]} ({diff})" in readme
    small = ("ln-tuning", "bitfit", "ia3", "lora-r1", "prompt-16")
    below = [key for key, (_, verdict) in clear.items() if key[1] in small and verdict == "lower"]
    assert not [key for key, (_, verdict) in clear.items() if key[1] in small and verdict == "higher"]
    named = [("digits", "bitfit"), ("digits", "prompt-16"), ("italy-power", "ln-tuning"), ("italy-power", "bitfit"),
             ("italy-power", "ia3"), ("italy-power", "lora-r1")]  # fmt: skip
    assert sorted(below) == sorted(named)
    assert f"below it in {len(below)} of their {4 * len(small)} cells and above it in none" in readme
    low, high = min(weights[m] for m in small), max(weights[m] for m in small)
    assert f"train {round(low / 1000)}-{round(high / 1000)}k weights (FPT: {round(weights['fpt'] / 1000)}k)" in readme
    assert not [key for key in clear if key[1] in ("lora-r8", "lora-r22", "lora-r8-ln-pos")]  # "level ... on all four"
    above = sorted(key for key, (_, verdict) in clear.items() if verdict == "higher")
    assert above == [("digits", "full"), ("digits", "unfreeze-top-down")]  # "beat FPT, on digits alone"
    config = read_json(Path(minilm_dir()) / "config.json")
    table_size = config["vocab_size"] * config["hidden_size"]  # the token table: no gradient reaches it
    changing = [weights["full"] - table_size, weights["unfreeze-top-down"]]
    assert {round(n / weights["fpt"]) for n in changing} == {51}
    assert f"each changing 51× FPT's weights (full fine-tuning's count of {weights['full'] / 1e6:.1f}M holds the " \
           "token-embedding table, which no gradient reaches), beat FPT, on digits alone" in readme  # fmt: skip
    capped = sum(get[("bit-xor", m)].capped for m in small)
    cap = get[("bit-xor", "fpt")].first["config"]["steps"]
    assert f"{capped} of their bit-XOR seeds ran to the {cap:,}-step cap" in readme

    def tie(s: Setting) -> bool:  # another lr ranks level with the chosen one, by the report's own selection key
        return any(lr_rank(s.on_common_seeds(lr)) == lr_rank(s.on_common_seeds(s.lr)) for lr in s.by_lr if lr != s.lr)

    sizes = [get[(t, "fpt")].first["task_info"]["split_sizes"]["val"] for t in ("gunpoint", "italy-power")]
    ties = [sum(tie(s) for s in settings if s.task == t) for t in ("gunpoint", "italy-power")]
    assert f"validate on {sizes[0]} and {sizes[1]} series" in readme
    assert f"ties, going to the smaller lr ({ties[0]} and {ties[1]} of 11 settings)" in readme
    lowest = [s for s in settings if s.task == "digits" and s.lr == min(s.by_lr) and not tie(s)]
    words = {5: "five", 6: "six", 7: "seven"}
    assert f"on digits {words[len(lowest)]} settings chose their grid's lowest lr outright" in readme

    def norms(label: str) -> dict:  # the layer norms' relative change on digits, per layer (None: outside the blocks)
        cells, _ = setting_cells([r["moved"] for r in get[("digits", label)].ok])
        return {layer: v for (group, layer), v in cells.items() if group == "layernorm"}

    fpt, full = norms("fpt"), norms("full")
    top = max(k for k in fpt if k is not None)
    rest = [v for k, v in fpt.items() if k != top]
    assert max(fpt, key=lambda k: fpt[k]) == top
    assert (f"(digits: by {fpt[top]:.2f} of their norm, {min(rest):.2f}-{max(rest):.2f} elsewhere), full fine-tuning's "
            f"by {max(full.values()):.2f} at most") in readme  # fmt: skip

    # bit-memory: every run at the step cap, each difference named at that budget
    memory = [s for s in settings if s.task == "bit-memory"]
    cap = get[("bit-memory", "fpt")].first["config"]["steps"]
    assert all(r["steps_run"] == cap for s in memory for r in s.ok) and f"reached the {cap:,}-step cap" in readme

    def steepest(s: Setting) -> float:  # the largest rise over a setting's seeds
        return max(rise(r) for r in s.ok)

    most, fpt_most = max(steepest(get[("bit-memory", m)]) for m in small), steepest(get[("bit-memory", "fpt")])
    assert f"rising by at most {fpt_most:.2f} points over its last 1,000 steps and the five " \
           f"small methods' by up to {most:.2f}" in readme  # fmt: skip
    verdicts = {m: v for (t, m), v in everywhere.items() if t == "bit-memory"}
    assert {m for m, (_, v) in verdicts.items() if v == "lower"} == {*small, "lora-r8"}
    assert {m for m, (_, v) in verdicts.items() if v == "higher"} == {"unfreeze-top-down"}
    gaps = sorted(float(verdicts[m][0].split()[0]) for m in small)
    assert f"those five are below FPT ({gaps[-1]:.1f} to {gaps[0]:.1f} points), as is LoRA r=8 " \
           f"({verdicts['lora-r8'][0]})" in readme  # fmt: skip
    assert f"gradual unfreezing is above it ({verdicts['unfreeze-top-down'][0]})" in readme

    # ListOps and Fashion-MNIST: many runs at the step cap, still rising: each task's passage (in the comparison's
    # section, from "On <task> <n>" to the next such start or the paragraph's end) gives that budget and names each
    # clear difference at it, and full fine-tuning's whichever it is
    names |= {"lora-r8": "LoRA r=8", "lora-r22": "LoRA r=22", "lora-r8-ln-pos": "LoRA r=8 beside FPT's groups"}
    section = text("README.md").split("### Which weights should train?")[1].split("\n### ")[0]
    passages = [x for p in section.split("\n\n") for x in re.split(r"(?=On (?:ListOps|Fashion-MNIST) \d)", flat(p))]
    for task, title in (("listops", "ListOps"), ("fashion-mnist", "Fashion-MNIST")):
        if task not in done:
            continue
        cells = [s for s in settings if s.task == task]
        cap = get[(task, "fpt")].first["config"]["steps"]
        capped, others = sum(s.capped for s in cells), max(steepest(s) for s in cells if s.label != "fpt")
        fpt_rise, runs_n = steepest(get[(task, "fpt")]), sum(len(s.ok) for s in cells)
        (paragraph,) = [x for x in passages if x.startswith(f"On {title} ")]
        assert paragraph.startswith(
            f"On {title} {capped} of the {runs_n} runs ran to the {cap:,}-step cap, FPT's best validation accuracy "
            f"rising by up to {fpt_rise:.2f} points over its last 1,000 steps and the other methods' by up to "
            f"{others:.2f}"
        ), task
        verdicts = {m: v for (t, m), v in everywhere.items() if t == task}
        for label, (diff, verdict) in verdicts.items():
            named = f"{names[label]} ({diff})" in paragraph
            assert named if verdict != "no clear difference" or label == "full" else not named, (task, label)

    if len(done) < 7:
        return
    # the paragraph under the table: which method beats FPT where, over all seven tasks, each with its interval
    titles = {"bit-xor": "bit-XOR", "digits": "digits", "gunpoint": "GunPoint", "italy-power": "ItalyPowerDemand",
              "bit-memory": "bit-memory", "listops": "ListOps", "fashion-mnist": "Fashion-MNIST"}  # fmt: skip
    order = [s.label for s in settings if s.task == "digits" and s.label != "fpt"]

    def listed(words: list[str]) -> str:
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"

    def beats(task: str, label: str) -> bool:
        return everywhere[(task, label)][1] == "higher"

    wins = [
        f"{names[m]} on " + listed([f"{titles[t]} ({everywhere[(t, m)][0]})" for t in done if beats(t, m)])
        for m in order
        if any(beats(t, m) for t in done)
    ]
    unbeaten = [titles[t] for t in done if not any(beats(t, m) for m in order)]
    lost = sum(everywhere[(t, m)][1] == "lower" for t in done for m in small)
    assert not any(beats(t, m) for t in done for m in small)
    assert (
        "Which method wins where, over the seven tasks (its difference from FPT in points, 95% interval): "
        f"{'; '.join(wins)}. Nothing beats FPT on {listed(unbeaten)}, and the five methods that train "
        f"{round(low / 1000)}-{round(high / 1000)}k weights lose in {lost} of their {len(small) * len(done)} cells "
        "and win in none."
    ) in readme


def test_methods_comparison_smollm2_sentences_come_from_its_results_file():
    """The README's smollm2 paragraph of the methods comparison: its cells and differences, read off
    results/methods-comparison/methods-comparison.jsonl, and the seed-2 rerun of LN tuning on FPT's machine."""
    from fpt.experiments.answers import difference
    from fpt.experiments.plan import Plan, load_sweep
    from fpt.experiments.records import read_records

    path = ROOT / "results/methods-comparison/methods-comparison.jsonl"
    settings = select(normalise(load_results([path])))
    smollm2 = [s for s in settings if s.first["backbone"] == "smollm2"]
    get = {(s.task, s.label): s for s in settings}
    readme = flat(text("README.md"))
    labels = ",".join(sorted({s.label for s in smollm2}))
    planned = Plan.of(load_sweep(ROOT / "configs/methods-comparison.yaml"), models=labels).total()
    assert planned == sum(len(s.ok) for s in smollm2) == 21 and not any(s.failed for s in smollm2)
    assert "On smollm2 (21 of 21 runs: GunPoint and ItalyPowerDemand at lr 1e-3, not searched" in readme
    page = flat(text("docs/baselines.md"))
    assert {s.lr for s in smollm2} == {1e-3} and {s.task for s in smollm2} == {"gunpoint", "italy-power"}

    def cells(label: str) -> str:
        return " and ".join(get[(t, label)].cell().split(" (")[0] for t in ("gunpoint", "italy-power"))

    assert f"FPT reaches {cells('smollm2-fpt')}%, (IA)³ {cells('smollm2-ia3')}, LoRA r=8" in readme
    assert f"{cells('smollm2-lora-r8')}. LoRA r=8 is the one method" in readme
    ratios = sorted(round(get[(t, "smollm2-lora-r8")].first["trainable_params"] / get[(t, "smollm2-fpt")].first[
        "trainable_params"]) for t in ("gunpoint", "italy-power"))  # fmt: skip
    assert f"LoRA r=8 ({ratios[0]}-{ratios[1]}× FPT's weights)" in readme
    versus = {
        (s.task, s.label): difference(s, get[(s.task, "smollm2-fpt")]) for s in smollm2 if s.label != "smollm2-fpt"
    }
    assert [key for key, (_, v) in versus.items() if v != "no clear difference"] == [("gunpoint", "smollm2-lora-r8")]
    assert versus[("gunpoint", "smollm2-lora-r8")][1] == "higher"
    assert f"(GunPoint: {versus[('gunpoint', 'smollm2-lora-r8')][0]})" in readme
    minilm = difference(get[("gunpoint", "smollm2-fpt")], get[("gunpoint", "fpt")])
    assert minilm[1] == "lower" and f"below minilm's FPT there ({minilm[0]})" in readme
    assert ("gunpoint", "smollm2-ln-tuning") not in get  # "so it ran on ItalyPowerDemand alone"

    # LN tuning and FPT: the same tensors trained, the same numbers on one CPU kind, other numbers across kinds
    runs = {(r["model_label"], r["seed"]): r for r in read_records(path) if r["task_label"] == "italy-power"}
    for seed in (0, 1):
        a, b = runs[("smollm2-fpt", seed)], runs[("smollm2-ln-tuning", seed)]
        assert a["environment"]["hardware"] == b["environment"]["hardware"] and a["test_loss"] == b["test_loss"]
    fpt, ln = runs[("smollm2-fpt", 2)], runs[("smollm2-ln-tuning", 2)]
    assert (
        "Intel(R) Xeon" in fpt["environment"]["hardware"]["cpu"] and "AMD EPYC" in ln["environment"]["hardware"]["cpu"]
    )
    assert f"seed 2 gave {100 * ln['test_accuracy']:.1f}% on an AMD EPYC and FPT's {100 * fpt['test_accuracy']:.1f}% " \
           "on an Intel Xeon; their curves part at step" in page  # fmt: skip
    parted = min(a["step"] for a, b in zip(fpt["curve"], ln["curve"], strict=False) if a != b)
    assert f"their curves part at step {parted}." in page and "repeats FPT's numbers on one CPU kind" in readme
    rerun = read_json(ROOT / "results/methods-comparison/rerun-ln-tuning-seed2/result.json")
    assert rerun["config"] == ln["config"] and rerun["environment"]["hardware"] == fpt["environment"]["hardware"]
    assert rerun["test_loss"] == fpt["test_loss"] != ln["test_loss"]
    kinds = {
        (r["environment"]["hardware"]["cpu"], r["environment"]["hardware"]["cpu_model"]) for r in read_records(path)
    }
    words = {3: "three", 4: "four", 5: "five"}
    assert f"The sweep's runs came from {words[len(kinds)]} CPU kinds" in page


def test_methods_lower_lr_table_and_sentences_come_from_its_results_file():
    """docs/baselines.md's table of the six digits settings one lr below their grid, and the sentences under it, are
    read off results/methods-lower-lr/methods-lower-lr.jsonl; the copied runs are the comparison's own records."""
    from fpt.experiments.plan import Plan, load_sweep
    from fpt.experiments.records import read_records

    path = ROOT / "results/methods-lower-lr/methods-lower-lr.jsonl"
    sweep = load_sweep(ROOT / "configs/methods-lower-lr.yaml")
    records = read_records(path)
    assert len({r["run_id"] for r in records}) == Plan.of(sweep).total() == 22 and all(
        r["status"] == "ok" for r in records
    )
    comparison = {r["run_id"]: r for r in read_records(ROOT / "results/methods-comparison/methods-comparison.jsonl")}
    copied = [r for r in records if r.get("reused_from")]
    assert len(copied) == 16 and all(r["test_accuracy"] == comparison[r["run_id"]]["test_accuracy"] for r in copied)
    names = {"lora-r8": "LoRA r=8", "lora-r22": "LoRA r=22", "lora-r8-ln-pos": "LoRA r=8 + FPT's groups",
             "prompt-16": "prompt tuning", "full": "full fine-tuning",
             "unfreeze-top-down": "gradual unfreezing"}  # fmt: skip
    page, better, capped = text("baselines"), [], []
    chosen_lr = {s.label: s.lr for s in select(normalise(load_results([path])))}

    def val(r: dict) -> str:
        return f"{100 * r['val_accuracy']:.1f}" + ("" if r["stopped_early"] else " (at cap)")

    for label in sweep.models:
        by_lr = {r["lr"]: r for r in records if r["model_label"] == label}
        lower, lowest = sorted(by_lr)[:2]
        assert {r["seed"] for r in by_lr.values()} == {0} and "reused_from" not in by_lr[lower]  # trained here
        chosen = chosen_lr[label]  # the report's choice on validation
        row = f"| {names[label]} | {lower:g} | {val(by_lr[lower])} | {lowest:g} | {val(by_lr[lowest])} | {chosen:g} |"
        assert row in page
        assert chosen != lower or by_lr[lower]["val_accuracy"] > by_lr[lowest]["val_accuracy"]
        better += [label] if chosen == lower else []
        capped += [label] if not by_lr[lower]["stopped_early"] else []
    flat_page = flat(page)
    assert better == ["unfreeze-top-down"] and "Five of the six validated worse one lr lower" in flat_page
    assert capped == ["lora-r8", "lora-r22"] and "(LoRA r=8 and r=22 there ran to the 3,000-step cap" in flat_page
    unfreeze = {r["lr"]: r for r in records if r["model_label"] == "unfreeze-top-down"}
    size = unfreeze[3e-5]["task_info"]["split_sizes"]["val"]
    images = round((unfreeze[3e-5]["val_accuracy"] - unfreeze[1e-4]["val_accuracy"]) * size)
    tests = [f"{100 * unfreeze[lr]['test_accuracy']:.1f}" for lr in (3e-5, 1e-4)]
    words = {1: "one", 2: "two", 3: "three"}
    better_by = f"validated better at 3e-05, by {words[images]} image of {size}"
    assert f"{better_by} (seed-0 test {tests[0]} against {tests[1]})" in flat_page
    assert "Best validation accuracy (%, of 269 images)" in flat_page and size == 269
    worse = {5: "five", 6: "six"}[len(sweep.models) - len(better)]
    readme = flat(text("README.md"))
    assert f"(one lr lower, {worse} [validated worse](docs/baselines.md#one-lr-lower-on-digits))" in readme


def test_methods_positions_table_and_sentences_come_from_its_results_files():
    """docs/baselines.md's table of FPT without its positions or its norms, beside FPT and LN tuning on the two UCR
    sets, and each figure under it, are read off the two sweeps' results files."""
    from fpt.experiments.answers import difference
    from fpt.experiments.plan import Plan, load_sweep
    from fpt.experiments.records import read_records

    files = [ROOT / "results/methods-comparison/methods-comparison.jsonl",
             ROOT / "results/methods-positions/methods-positions.jsonl"]  # fmt: skip
    assert len(read_records(files[1])) == Plan.of(load_sweep(ROOT / "configs/methods-positions.yaml")).total() == 16
    get = {(s.task, s.label): s for s in select(normalise(load_results(files)))}
    labels = ("fpt", "fpt-norms-only", "fpt-positions-only", "ln-tuning")
    page = text("baselines")
    for task in ("gunpoint", "italy-power"):
        diff, verdict = difference(get[(task, "fpt-positions-only")], get[(task, "fpt-norms-only")])
        cells = " | ".join(get[(task, label)].cell() for label in labels)
        assert f"| {task} | {cells} | {diff} ({verdict}) |" in page
        assert all(len(get[(task, label)].ok) == 3 for label in labels)
    flat_page = flat(page)
    small = [
        difference(get[("italy-power", m)], get[("italy-power", "fpt")])
        for m in ("ln-tuning", "bitfit", "ia3", "lora-r1")
    ]
    assert all(verdict == "lower" for _, verdict in small)
    gaps = [-float(diff.split()[0]) for diff, _ in small]
    assert f"each {round(min(gaps))}-{round(max(gaps))} points below FPT" in flat_page

    def versus(a: str, b: str, task: str = "italy-power") -> tuple[str, str]:
        return difference(get[(task, a)], get[(task, b)])

    assert versus("fpt-norms-only", "ln-tuning")[1] == "no clear difference"
    assert f"level with it, {versus('fpt-norms-only', 'ln-tuning')[0]}" in flat_page
    assert versus("fpt-norms-only", "fpt")[1] == "lower"
    assert f"below FPT ({versus('fpt-norms-only', 'fpt')[0]} points)" in flat_page
    assert versus("fpt-positions-only", "fpt")[1] == "no clear difference"
    assert f"its positions alone are level with FPT ({versus('fpt-positions-only', 'fpt')[0]})" in flat_page
    positions = get[("italy-power", "fpt")].first["trainable_params"] - get[("italy-power", "fpt-norms-only")].first[
        "trainable_params"]  # fmt: skip
    assert f"the position table, {positions:,} of FPT's weights" in flat_page
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    assert all(versus(a, b, "gunpoint")[1] == "no clear difference" for a, b in pairs)  # "no two ... differ clearly"
    assert "On GunPoint no two of these settings differ clearly" in flat_page


def test_sweeps_page_speed_of_one_cpu_kind_against_the_others_comes_from_the_comparison():
    """docs/sweeps.md's example of --time-limit's per-kind estimate: ListOps × BitFit's time on the family-23 EPYC
    against the other kinds', by budget.speed_factor over the methods comparison's records."""
    from fpt.experiments.budget import kind_of, speed_factor
    from fpt.experiments.records import latest_records, read_records

    records = latest_records(read_records(ROOT / "results/methods-comparison/methods-comparison.jsonl"))
    bitfit = [r for r in records if (r["task_label"], r["model_label"]) == ("listops", "bitfit")]
    (zen1,) = {kind_of(r) for r in bitfit if r["environment"]["hardware"]["cpu_model"].startswith("family 23 ")}
    assert len({kind_of(r) for r in bitfit}) > 1
    factor, pairs = speed_factor(bitfit, zen1)
    assert pairs == 1
    assert f"ListOps runs of BitFit took {factor:.2f} times as long on an AMD EPYC of family 23" in flat(
        text("docs/sweeps.md")
    )
