"""Reports rendered from result records, never typed by hand: lr selection, tables with intervals, answers
(fpt.experiments.answers), plots.

A *setting* is a task label and a model label with its other grid-axis values (fpt.experiments.plan); its lr is
chosen on validation and its cells are mean ± 95% interval over seeds (fpt.experiments.settings). One seed gives no
interval and says so.
"""

from __future__ import annotations

import json
import platform
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fpt.errors import FPTError
from fpt.experiments.answers import answers, is_fpt, trains, whole
from fpt.experiments.budget import counted, kind_of
from fpt.experiments.budget import runs as count_runs
from fpt.experiments.moved import section as moved_section
from fpt.experiments.records import chosen_labels, latest_records, read_records
from fpt.experiments.settings import (
    CONVERGED,
    Record,
    Setting,
    cell,
    digits_of,
    grouped_by_task,
    params_cell,
    scale_of,
    select,
    steps_to_converge,
)
from fpt.freeze import PAPER_GROUPS
from fpt.moved import MOVED_FILE
from fpt.results import CURVE_FILE, read_curve, write_atomic
from fpt.version import __version__

# ---- reading -------------------------------------------------------------------------------------------------------


def load_results(paths: list[Path]) -> list[Record]:
    """Result records from result.json files, folders holding them (searched recursively) or results JSONL files."""
    rows: list[Record] = []
    for path in paths:
        if not path.exists():
            raise FPTError(f"results not found: {path}")
        files = sorted(path.rglob("result.json")) if path.is_dir() else [path]
        for file in files:
            if file.suffix == ".jsonl":
                rows.extend(read_records(file))
                continue
            try:
                row = json.loads(file.read_text())
                # fpt train writes the learning curve beside result.json
                if "curve" not in row and file.with_name(CURVE_FILE).is_file():
                    row["curve"] = read_curve(file.parent)
                moved = file.with_name(MOVED_FILE)  # and what moved (fpt.moved), for the what-moved section
                if "moved" not in row and moved.is_file():
                    row["moved"] = json.loads(moved.read_text())
                rows.append(row)
            except (OSError, json.JSONDecodeError) as err:
                raise FPTError(f"cannot read results from {file}: {err}") from None
    return rows


def normalise(records: list[Record]) -> list[Record]:
    """Sweep records as they are (the last per run id); plain result.json records get labels from their fields."""
    out = []
    for i, r in enumerate(records):
        if "task_label" not in r:
            groups = r.get("train_groups", [])
            label = f"{r['model']} {r['backbone']}/{r['init']}"
            if r["model"] == "fpt" and tuple(groups) != PAPER_GROUPS:
                label += f" train={','.join(groups)}"
            if (r.get("config") or {}).get("method", "fpt") != "fpt":
                label += f" method={r['config']['method']}"
            r = {"run_id": f"record-{i}", "task_label": r["task"], "model_label": label, "axes": {}, **r}
        out.append({"status": "ok", **r})
    return latest_records(out)


def only(records: list[Record], options: ReportOptions) -> list[Record]:
    """The records of the task and model labels `options` names (--tasks, --models); an unknown label is an error
    naming it and the labels there are."""
    for key, chosen in (("task", options.tasks), ("model", options.models)):
        if chosen is None:
            continue
        found = list(dict.fromkeys(r[f"{key}_label"] for r in records))
        labels = chosen_labels(key, chosen, found, f" in the results; their {key}s are")
        records = [r for r in records if r[f"{key}_label"] in labels]
    return records


def pivot(rows: list[Record], row_key: str, col_key: str, metric: str = "test_accuracy") -> str:
    """A markdown table: one row per `row_key` value, one column per `col_key` value, cells in % of `metric`."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        values[(str(r[row_key]), str(r[col_key]))].append(r[metric])
    row_names = list(dict.fromkeys(str(r[row_key]) for r in rows))
    col_names = list(dict.fromkeys(str(r[col_key]) for r in rows))
    lines = [f"| {row_key} \\ {col_key} | " + " | ".join(col_names) + " |", "|---|" + "---|" * len(col_names)]
    for name in row_names:
        lines.append(f"| {name} | " + " | ".join(cell(values[(name, c)]) for c in col_names) + " |")
    return "\n".join(lines)


# ---- tables ---------------------------------------------------------------------------------------------------------


WIDE = 8  # tasks a model × task table holds as columns; a sweep of more gets a row per task


def table(
    settings: list[Setting],
    row_of: Callable[[Setting], str],
    corner: str,
    fmt: Callable[[Setting], str],
    by_task: bool = False,
    mean_row: bool = False,
) -> tuple[str, int]:
    """A markdown table of settings: rows by `row_of` (the setting's label is added where two settings share a row
    and task), columns by task label; `by_task`: a row per task and a column per `row_of` value instead (`corner`
    'model \\ task' becomes 'task \\ model'), and with `mean_row` a last row: each column's test accuracy averaged
    over the accuracy tasks, where it has finished runs on all of them (the mean over data sets the time-series
    field compares). Returns it and its number of `row_of` values."""
    tasks = list(dict.fromkeys(s.task for s in settings))
    shared = Counter((row_of(s), s.task) for s in settings)
    by_row: dict[str, dict[str, Setting]] = {}
    for s in settings:
        row = row_of(s)
        if any(shared[(row, t)] > 1 for t in tasks):
            row = f"{row} [{s.label}]"
        by_row.setdefault(row, {})[s.task] = s
    cells = {row: {t: fmt(s) for t, s in group.items()} for row, group in by_row.items()}
    metrics = {s.task: s.metric for s in settings}
    named = {t: t if metrics[t] == "accuracy" else f"{t} ({metrics[t].upper()}, lower is better)" for t in tasks}
    if by_task:
        sep = " \\ "
        lines = [
            f"| {sep.join(reversed(corner.split(sep)))} | " + " | ".join(cells) + " |",
            "|---|" + "---|" * len(cells),
        ]
        lines += [f"| {named[t]} | " + " | ".join(c.get(t, "–") for c in cells.values()) + " |" for t in tasks]
        scored = [t for t in tasks if metrics[t] == "accuracy"]
        if mean_row and len(scored) > 1:
            row_means = [
                f"{mean(100 * mean(group[t].values('test_accuracy')) for t in scored):.1f}"
                if all(t in group and group[t].ok for t in scored)
                else "–"
                for group in by_row.values()
            ]
            lines.append(f"| mean over the {len(scored)} accuracy tasks | " + " | ".join(row_means) + " |")
    else:
        lines = [f"| {corner} | " + " | ".join(named.values()) + " |", "|---|" + "---|" * len(tasks)]
        lines += [f"| {row} | " + " | ".join(c.get(t, "–") for t in tasks) + " |" for row, c in cells.items()]
    return "\n".join(lines), len(cells)


def steps_cell(s: Setting) -> str:
    steps = [steps_to_converge(r) for r in s.ok]
    return cell([float(v) for v in steps if v is not None], scale=1.0, digits=0, failed=s.failed)


def selection_table(settings: list[Setting]) -> str:
    lines = [
        "| task | setting | chosen lr | mean val accuracy (%, or the task's error metric) per lr, on the seeds every "
        "lr ran |",
        "|---|---|---|---|",
    ]
    for s in settings:
        per_lr = []
        for lr in sorted(s.by_lr):
            runs = s.on_common_seeds(lr)
            ok = [r[f"val_{s.metric}"] for r in runs if r["status"] == "ok"]
            failed = len(runs) - len(ok)
            text = f"{scale_of(s.metric) * mean(ok):.{digits_of(s.metric, mean(ok))}f}" if ok else "–"
            per_lr.append(f"{lr:g}: {text}" + (f" ({failed}/{len(runs)} failed)" if failed else ""))
        lines.append(f"| {s.task} | {s.label} | {s.lr:g} | {'; '.join(per_lr)} |")
    return "\n".join(lines)


# ---- environment -----------------------------------------------------------------------------------------------------


def environment_lines(records: list[Record]) -> list[str]:
    """Versions, hardware and commits of every record (distinct values with counts); dirty trees are flagged."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        env = r.get("environment") or {}
        for name, version in (env.get("versions") or {}).items():
            counts[name]["not recorded" if version is None else str(version)] += 1
        hw = env.get("hardware") or {}
        kind = ", ".join(str(hw[k]) for k in ("cpu_model", "cpu_capability") if hw.get(k))  # the CPU kind
        counts["hardware"][f"{hw.get('cpu')}{f' ({kind})' if kind else ''} ({hw.get('cpu_count')} cores), "
                           f"{hw.get('device')}" + (f" {hw['gpu']}" if hw.get("gpu") else "")] += 1  # fmt: skip
        counts["torch threads"][str(hw.get("torch_threads"))] += 1
        counts["platform"][str(hw.get("platform"))] += 1
        git = env.get("git") or {}
        counts["commit"][f"{git.get('commit')}" + (" (uncommitted changes)" if git.get("dirty") else "")] += 1
    lines = []
    for name, values in counts.items():
        text = "; ".join(f"{v} ({count_runs(n)})" if len(values) > 1 else v for v, n in values.most_common())
        lines.append(f"- {name}: {text}")
    if (kinds := len({kind_of(r) for r in records})) > 1:
        lines.append(
            f"- the runs came from {kinds} machine kinds: a run repeats bit for bit on its own kind; "
            "on another, kernels that round differently (and fpt's CPU paths, chosen by the CPU's capability) can "
            "give a seed other numbers"
        )
    finished = sorted(r["finished_at"] for r in records if r.get("finished_at"))
    if finished:
        lines.append(f"- runs finished between {finished[0]} and {finished[-1]}")
    return lines


# ---- the report ---------------------------------------------------------------------------------------------------


class ReportOptions(BaseModel):
    """Where `fpt report` writes and what it draws: the options of `fpt report` (named options, not settings: a
    setting here is a task × model of the results)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Field(description="where report.md and the PNGs go", json_schema_extra={"metavar": "DIR"})
    runs_dir: Path | None = Field(
        None,
        description="run folders (default: the first results path without .jsonl)",
        json_schema_extra={"metavar": "DIR"},
    )
    tasks: str | None = Field(
        None,
        description="only these task labels (comma list; default: every task)",
        json_schema_extra={"metavar": "LABELS"},
    )
    models: str | None = Field(
        None,
        description="only these model labels (comma list; default: every model)",
        json_schema_extra={"metavar": "LABELS"},
    )
    attention: bool = Field(True, description="the attention-map figure")
    attention_backbone: str | None = Field(
        None,
        description="backbone of the attention maps when no trained bit-memory run is found (default: the sweep's, "
        "else minilm)",
        json_schema_extra={"metavar": "NAME"},
    )
    attention_backbone_path: str | None = Field(
        None, description="its folder, for backbones read from a folder", json_schema_extra={"metavar": "DIR"}
    )

    @field_validator("attention_backbone")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        from fpt.registry import BACKBONES

        if name is not None:
            try:
                BACKBONES.resolve(name)
            except FPTError as err:
                raise ValueError(str(err)) from None
        return name


def write_report(paths: list[Path], options: ReportOptions) -> Path:
    """Render OUT/report.md and its PNG plots from the results files `paths`; returns the report's path."""
    from fpt.experiments.sweep import default_runs_dir

    records = only(normalise(load_results(paths)), options)
    if not records:
        raise FPTError(f"no records in {', '.join(map(str, paths))}")
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = options.runs_dir or default_runs_dir(paths[0])
    settings = select(records)
    failed = [r for r in records if r["status"] != "ok"]
    md = [
        *preamble(paths, records, settings, failed),
        *tables(settings),
        *failed_runs(failed),
        *plot_sections(records, settings, runs_dir, options),
        "",
        "## Environment the numbers came from",
        "",
        *environment_lines(records),
        f"- report rendered {datetime.now(UTC).isoformat(timespec='seconds')} with fpt {__version__}, Python "
        f"{platform.python_version()}",
        "",
    ]
    path = out / "report.md"
    write_atomic(path, "\n".join(md))
    return path


def preamble(paths: list[Path], records: list[dict], settings: list[Setting], failed: list[dict]) -> list[str]:
    """Title, where the numbers come from, the protocol, and the answers to the paper's questions."""
    sweeps = sorted({str(r.get("sweep")) for r in records if r.get("sweep")})
    tasks = counted(len({s.task for s in settings}), "task")
    return [
        f"# Report: {', '.join(sweeps) or 'results'}",
        "",
        f"Rendered by `fpt report` from {', '.join(f'`{p}`' for p in paths)}: {count_runs(len(records))} "
        f"({len(failed)} failed), {counted(len(settings), 'setting')}, {tasks}. Every number below is computed from "
        f"{'that file' if len(paths) == 1 else 'those files'}.",
        "",
        "Protocol: for each setting (task × model, with its other grid values) the learning rate is chosen on the "
        "validation split by the mean best-validation accuracy over the seeds every lr ran (all seeds, or the first "
        "seed where a sweep ran the other seeds at the lr chosen there: `lr_selection: first-seed`; an lr with a "
        "failed seed ranks below any "
        "lr without one; ties go to the smaller lr), and only that lr's test numbers are reported. Test accuracy is "
        "measured once per run, on its best-on-validation weights. Cells: mean over seeds ± half-width of the 95% "
        "t-interval (t quantile with n − 1 degrees of freedom × sd / √n), with n seeds; accuracy in %. "
        "*k at cap*: k of those seeds ran to their step cap instead of stopping on a validation plateau (early "
        "stopping after `patience` validations without a better accuracy); their numbers are limited by the "
        "budget, not shown to be converged."
        + (
            " *lr carried*: the lr was not searched on this task but carried over from the tasks the records' "
            "`lr_chosen_on` names (a sweep's `lr_transfer`)."
            if any(r.get("lr_chosen_on") for r in records)
            else ""
        ),
        "",
        "## Answers",
        "",
        *answers(settings),
    ]


def tables(settings: list[Setting]) -> list[str]:
    """Model × task, the backbone and trained-group views where a sweep varied them, steps to converge, lr choice. A
    sweep of more than WIDE tasks gets its model tables a row per task (sets as rows, as the time-series field
    tabulates them), so that they stay readable."""
    by_task = len({s.task for s in settings}) > WIDE
    view = "task × model" if by_task else "model × task"
    md = ["", f"## Table 1: {view} (test accuracy, %)", "", table(settings, lambda s: s.label, "model \\ task",
          Setting.cell, by_task, mean_row=True)[0]]  # fmt: skip
    fpts = [s for s in settings if is_fpt(s, init=None)]
    text, rows = table(fpts, lambda s: f"{s.first['backbone']} / {s.first['init']}", "backbone / init \\ task",
                       Setting.cell, by_task)  # fmt: skip
    if rows > 1:
        md += ["", "## Pretraining modality: frozen backbone × task (FPT, test accuracy, %)", "", text]
    ablation = [s for s in settings if s.model == "fpt" and s.first["init"] == "pretrained" and whole(s)]
    ablation.sort(key=lambda s: len(s.groups))
    if len({s.groups for s in ablation}) > 1:  # a sweep that varied the trained groups
        text = table(ablation, trains, "trained groups \\ task", Setting.cell, by_task)[0]  # as the answers name them
        md += ["", "## Which parameters train: groups × task (FPT, pretrained, test accuracy, %)", "", text]
    return md + [
        "",
        f"## Trained weights: {view} (count, and % of the model's weights)",
        "",
        table(settings, lambda s: s.label, "model \\ task", params_cell, by_task)[0],
        *EMBEDDING_NOTE * any("embedding" in s.groups for s in settings),
        "",
        f"## Steps to converge (first validation at ≥ {CONVERGED:.0%} of the run's best val accuracy)",
        "",
        table(settings, lambda s: s.label, "model \\ task", steps_cell, by_task)[0],
        "",
        "## Learning-rate selection",
        "",
        selection_table(grouped_by_task(settings)),
    ]


EMBEDDING_NOTE = (
    "",
    "A count is of the weights set to train. The `embedding` group (under `train: all`) holds the backbone's "
    "token-embedding table, which fpt's input layer takes the place of: no gradient reaches its rows (a decoder's "
    "BOS row aside), so the weights that change are fewer by the table's size (vocabulary × width).",
)


def failed_runs(failed: list[dict]) -> list[str]:
    from fpt.experiments.settings import setting_label

    if not failed:
        return []
    md = ["", "## Failed runs", "", "| task | setting | lr | seed | error |", "|---|---|---|---|---|"]
    for r in failed:
        error = str(r.get("error", "")).replace("|", "\\|")
        md.append(
            f"| {r['task_label']} | {setting_label(r['model_label'], r.get('axes') or {})} | {r['lr']:g} | "
            f"{r['seed']} | {error} |"
        )
    return md


def plot_sections(records: list[dict], settings: list[Setting], runs_dir: Path, options: ReportOptions) -> list[str]:
    """Learning curves, accuracy vs trained parameters, what moved, and (bit-memory) the attention maps."""
    from fpt.experiments import plots

    out = options.out
    plots.learning_curves(settings, out / "learning_curves.png")
    plots.accuracy_vs_params(settings, out / "accuracy_vs_params.png")
    md = ["", "## Plots", "", "![learning curves](learning_curves.png)", "",
          "![accuracy vs trained parameters](accuracy_vs_params.png)", ""]  # fmt: skip
    md += moved_section(grouped_by_task(settings), runs_dir, out)
    if options.attention:
        try:
            caption = plots.attention_maps(
                records, settings, runs_dir, out / "attention_bit_memory.png", options.attention_backbone,
                options.attention_backbone_path,
            )  # fmt: skip
            md += ["", "![attention maps](attention_bit_memory.png)", "", caption]
        except FPTError as err:
            md += ["", f"Attention maps not drawn: {err}"]
    return md
