"""The README's and BENCHMARKS.md's numbers are renderings of committed results files, not typed by hand."""

import re
import subprocess
from fnmatch import fnmatch
from pathlib import Path

from fpt.experiments.report import answers, load_results, normalise, table
from fpt.experiments.settings import Setting, select
from fpt.performance import render as bench_render
from fpt.results import read_json

ROOT = Path(__file__).resolve().parents[1]


def test_readme_offline_suite_table_is_rendered_from_the_results_file():
    records = normalise(load_results([ROOT / "results/offline-suite/offline-suite.jsonl"]))
    main_table = table(select(records), lambda s: s.label, "model \\ task", Setting.cell)[0]
    readme = (ROOT / "README.md").read_text()
    assert main_table in readme
    assert main_table in (ROOT / "results/offline-suite/report.md").read_text()


def test_benchmarks_md_is_rendered_from_the_bench_record():
    record = read_json(ROOT / "results/bench/cpu.json")
    assert bench_render.render_markdown(record) == (ROOT / "BENCHMARKS.md").read_text()


def test_readme_foundation_comparison_is_rendered_from_the_result_files():
    paths = sorted((ROOT / "results/foundation").glob("*-s[0-9]/result.json"))
    assert len(paths) == 12  # listops and bit-memory × pretrained, random × 3 seeds
    lines = answers(select(normalise(load_results(paths))))
    rows = [line for line in lines if line.startswith(("| bit-memory |", "| listops |"))]
    assert len(rows) == 2 and all("| higher |" in row for row in rows)
    readme = (ROOT / "README.md").read_text()
    assert all(row in readme for row in rows)


def test_readme_fashion_fpt_vs_linear_rows_come_from_the_result_files():
    readme = (ROOT / "README.md").read_text()
    for name in ("fpt-2000", "fpt-4000", "linear-2000", "linear-4000"):
        record = read_json(ROOT / f"results/suite/fashion-{name}/result.json")
        steps = f"{record['steps']:,}"
        test, val = 100 * record["test_accuracy"], 100 * record["val_accuracy"]
        row = f"| {steps} | {test:.2f}% | {val:.1f}% ({record['best_step']}"
        assert row in readme, row


def test_every_results_path_the_readme_cites_is_committed():
    """A results file, folder or glob the README names matches a tracked file (a .gitignore pattern once hid
    results/bench/runs/, whose records the README cited, from every commit)."""
    readme = (ROOT / "README.md").read_text()
    cited = set(re.findall(r"[`(](results/[^`)\s]*)[`)]", readme))
    # the pattern finds files, folders and globs alike
    assert {"results/bench/cpu.json", "results/bench/runs/", "results/bench/runs/*-compile-*.json"} <= cited
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "results"], capture_output=True, text=True, check=True
    ).stdout.split()
    missing = [path for path in sorted(cited) if not any(fnmatch(t, path) or t.startswith(path) for t in tracked)]
    assert not missing, missing
