"""Reports rendered from result records, never typed by hand: lr selection, tables with intervals, answers, plots.

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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fpt.config import TrainConfig, identity
from fpt.errors import FPTError
from fpt.experiments.moved import section as moved_section
from fpt.experiments.records import chosen_labels, latest_records, read_records
from fpt.experiments.settings import (
    CONVERGED,
    Record,
    Setting,
    cell,
    digits_of,
    scale_of,
    select,
    steps_to_converge,
    welch,
)
from fpt.freeze import PAPER_GROUPS
from fpt.moved import MOVED_FILE
from fpt.results import write_atomic
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
                curve = file.with_name("curve.jsonl")  # fpt train writes the learning curve beside result.json
                if "curve" not in row and curve.is_file():
                    row["curve"] = [json.loads(line) for line in curve.read_text().splitlines() if line.strip()]
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


def params_cell(s: Setting) -> str:
    """Trained weights of the setting's runs and their share of the model's: '37,442 (0.03%)'."""
    runs = s.chosen or next(iter(s.by_lr.values()))
    trained = sorted({r["trainable_params"] for r in runs if r.get("trainable_params") is not None})
    total = max((r.get("total_params") or 0 for r in runs), default=0)
    if not trained:
        return "–"
    text = " / ".join(f"{n:,}" for n in trained)  # one count unless runs of the setting differ
    if not total:
        return text
    share = 100 * trained[-1] / total
    return text + (f" ({share:.0f}%)" if share >= 10 else f" ({share:.2f}%)" if share >= 0.1 else f" ({share:.2g}%)")


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


def difference(a: Setting, b: Setting) -> tuple[str, str]:
    """'+1.2 [−0.5, +2.9]' (points of test accuracy, or the task's error metric, with its 95% Welch interval) and a
    verdict for a vs b."""
    metric = a.metric
    va, vb = ([scale_of(metric) * v for v in s.values(f"test_{metric}")] for s in (a, b))
    if not va or not vb:
        return "–", "no finished runs"
    d = digits_of(metric, mean(vb))  # the baseline's magnitude: a task's differences share their decimals
    diff, half = welch(va, vb)
    if half is None:
        return f"{diff:+.{d}f}", "n=1: no interval"
    lo, hi = diff - half, diff + half
    verdict = "higher" if lo > 0 else "lower" if hi < 0 else "no clear difference"
    if metric != "accuracy" and verdict != "no clear difference":  # an error metric: lower is better
        verdict += " (worse)" if verdict == "higher" else " (better)"
    return f"{diff:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]", verdict


def whole(s: Setting) -> bool:
    """The setting's backbone keeps all its blocks: a truncated one (config `layers`) is an ablation, not FPT."""
    return s.first.get("config", {}).get("layers") is None


def is_fpt(s: Setting, init: str | None = "pretrained") -> bool:
    return s.model == "fpt" and s.groups == PAPER_GROUPS and whole(s) and (init is None or s.first["init"] == init)


def fpt_rows(settings: list[Setting]) -> list[Setting]:
    """The pretrained FPT settings, one answer row each, a task's rows together (FPT on two backbones, from two
    results files, sits side by side), tasks in the order their first FPT setting appears."""
    fpts = [s for s in settings if is_fpt(s)]
    tasks = list(dict.fromkeys(s.task for s in fpts))
    return sorted(fpts, key=lambda s: tasks.index(s.task))


def ablation(s: Setting) -> str | None:
    """Which of Tan et al.'s (2024) ablations a setting is, by its config: FPT without transformer blocks, or one
    block trained from scratch."""
    layers = s.first.get("config", {}).get("layers")
    if s.model == "fpt" and s.groups == PAPER_GROUPS and layers == 0:
        return "no transformer"
    if s.model == "transformer" and s.first["init"] == "random" and layers == 1:
        return "one trained layer"
    return None


def subsection(heading: str, intro: str, columns: list[str], rows: list[str]) -> list[str]:
    """An answer's lines: its heading, what it computes, and its table; none without rows."""
    if not rows:
        return []
    return ["", f"### {heading}", "", intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows]


def lm_answers(settings: list[Setting]) -> list[str]:
    """Does the language model help? FPT vs its random init, no transformer and one trained layer, per task."""
    columns = ("random init", "no transformer", "one trained layer")
    rows = []
    for f in fpt_rows(settings):
        same_task = [s for s in settings if s.task == f.task]
        others = {
            "random init": next(
                (s for s in same_task if is_fpt(s, "random") and s.first["backbone"] == f.first["backbone"]), None
            ),  # fmt: skip
            **{name: next((s for s in same_task if ablation(s) == name), None) for name in columns[1:]},
        }
        if others["no transformer"] or others["one trained layer"]:  # random init alone: the first answer has it
            cells = ["–" if b is None else "{} ({})".format(*difference(f, b)) for b in others.values()]
            rows.append(f"| {f.task} | {f.label} {f.cell()} | " + " | ".join(cells) + " |")
    return subsection(
        "Does the language model help?",
        "Tan et al. (2024) asked it of language models on time series: FPT (pretrained backbone) minus the same "
        "recipe with a random-init backbone, with no transformer blocks (input layer → positions and norm → head), "
        "and with one transformer block trained from scratch, in points (or the task's error metric) with the 95% "
        "Welch interval; *higher*/*lower*: the interval excludes 0.",
        ["task", "FPT", *(f"FPT − {c}" for c in columns)],
        rows,
    )


def trains(s: Setting) -> str:
    """What a setting trains: a peft method with its knob and any groups beside it ('lora r=8 + layernorm, positional';
    every method also trains the input layer and head), or fpt's own groups ('input, output, attention, ...'), and
    whether a schedule unfreezes them."""
    config = s.first.get("config") or {}
    method = config.get("method") or "fpt"
    knob = {"lora": f" r={config.get('lora_rank')}", "prompt": f" {config.get('prompt_tokens')} tokens"}.get(method, "")
    if method == "fpt":
        text = ", ".join(g for g in s.groups if g != "adapter")
    else:
        extra = ", ".join(g for g in s.groups if g not in ("input", "output", "adapter"))
        text = method + knob + (f" + {extra}" if extra else "")
    return text + (" (unfrozen on a schedule)" if config.get("unfreeze") else "")


def method_answers(settings: list[Setting]) -> list[str]:
    """Which weights should train: every other way of training the same pretrained, whole backbone (a peft method,
    other groups, full fine-tuning, an unfreezing schedule) against FPT on the same task and backbone."""
    rows = []
    for f in fpt_rows(settings):
        for s in settings:
            same = (s.task, s.model, s.first["init"], s.first["backbone"]) == (
                f.task,
                "fpt",
                "pretrained",
                f.first["backbone"],
            )
            if same and whole(s) and not is_fpt(s, None):
                diff, verdict = difference(s, f)
                rows.append(f"| {s.task} | {s.first['backbone']} | {s.label} | {trains(s)} | "
                            f"{params_cell(s)} | {s.cell()} | {f.cell()} | {diff} | {verdict} |")  # fmt: skip
    return subsection(
        "Which weights should train? Each other way against FPT",
        "Settings that train other weights of the same pretrained backbone (a parameter-efficient method, other "
        "groups, every weight, an unfreezing schedule) against FPT (input, output, layer norms, positions) on the "
        "same task and backbone: the setting's test accuracy (or the task's error metric) minus FPT's, in points, "
        "with its 95% Welch interval; *higher*/*lower*: the interval excludes 0.",
        ["task", "backbone", "setting", "trains", "trained weights", "setting", "FPT", "setting − FPT", "verdict"],
        rows,
    )


NOT_A_CHANGE = ("lr", "seed")  # chosen or varied within a setting
ANSWERED = ("init", "model", "method", "backbone")  # the answers above and the tables' own views


def one_change(a: Setting, b: Setting) -> tuple[str, Any, Any] | None:
    """(field, a's value, b's value) where the two settings' run configs differ in exactly one field, other than lr
    and seed and the fields the report answers elsewhere (init, model, method, backbone); else None."""
    fields = TrainConfig.model_fields
    configs = [identity(s.first.get("config") or {}) for s in (a, b)]
    keys = sorted(set(configs[0]) | set(configs[1]))
    values = {k: [c.get(k, fields[k].get_default() if k in fields else None) for c in configs] for k in keys}
    changed = [k for k, (va, vb) in values.items() if va != vb and k not in NOT_A_CHANGE]
    if len(changed) != 1 or changed[0] in ANSWERED:
        return None
    return changed[0], *values[changed[0]]


def change_answers(settings: list[Setting]) -> list[str]:
    """What one config change does: pairs of settings on one task that differ in a single config field, the changed
    one (the value that is not the default, or the later setting) against the other."""
    fields = TrainConfig.model_fields
    rows = []
    for i, a in enumerate(settings):
        for b in settings[i + 1 :]:
            lm = ablation(a) or ablation(b)  # a truncated body: "does the language model help?" answers it
            change = a.task == b.task and not lm and one_change(a, b)
            if not change:
                continue
            field, va, vb = change
            first, then = (b, a) if field in fields and vb == fields[field].get_default() else (a, b)  # default first
            if first is b:
                va, vb = vb, va
            diff, verdict = difference(then, first)
            rows.append(f"| {a.task} | `{field}`: {va} → {vb} | {first.label} {first.cell()} | {then.label} "
                        f"{then.cell()} | {diff} | {verdict} |")  # fmt: skip
    return subsection(
        "What does one change of the config do?",
        "Pairs of settings on the same task whose run configs differ in one field (besides lr and seed, and the "
        "init, model, method and backbone the answers and tables above compare): the changed setting's test "
        "accuracy (or the task's error metric) minus the other's, in points, with its 95% Welch interval; "
        "*higher*/*lower*: the interval excludes 0.",
        ["task", "change", "from", "to", "to − from", "verdict"],
        rows,
    )


def answers(settings: list[Setting]) -> list[str]:
    """The report's answers: pretrained vs random init, and FPT vs each trained-from-scratch baseline, per task."""
    out = ["### Does a pretrained frozen backbone beat a random-init one?", ""]
    error_metrics = ", ".join(dict.fromkeys(s.metric.upper() for s in settings if s.metric != "accuracy"))
    errors = (f" On a task scored by an error ({error_metrics}) the cells and differences are that error, where lower "
              "is better: a verdict adds (better) or (worse)." if error_metrics else "")  # fmt: skip
    rows = []
    for p in fpt_rows(settings):
        for r in settings:
            same = (r.task, r.model, r.groups, r.first["backbone"]) == (p.task, p.model, p.groups, p.first["backbone"])
            if same and r.first["init"] == "random" and r.first.get("axes", {}) == p.first.get("axes", {}):
                diff, verdict = difference(p, r)
                rows.append(f"| {p.task} | {p.first['backbone']} | {p.cell()} | {r.cell()} | {diff} | {verdict} |")
    if rows:
        out += [
            "Test accuracy (%), FPT (input, output, layer norms, positions trained) on a pretrained vs a random-init "
            "frozen backbone; difference in points with its 95% Welch interval; *higher*: the interval lies above 0."
            + errors,
            "",
            "| task | backbone | pretrained | random init | pretrained − random | verdict |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    else:
        out.append("No pair of FPT settings that differ only in init.")
    out += ["", "### Where does FPT stand against each baseline?", ""]
    others = list(dict.fromkeys(s.label for s in settings if s.model != "fpt"))
    rows = []
    for f in fpt_rows(settings):
        cells = []
        for label in others:
            b = next((s for s in settings if s.task == f.task and s.label == label), None)
            cells.append("–" if b is None else "{} ({})".format(*difference(f, b)))
        rows.append(f"| {f.task} | {f.label} {f.cell()} | " + " | ".join(cells) + " |")
    if rows and others:
        out += [
            "FPT's test accuracy minus each baseline's, in points, with its 95% Welch interval; *higher*/*lower*: "
            "the interval excludes 0." + errors,
            "",
            f"| task | FPT ({'%, or error' if errors else '%'}) | " + " | ".join(f"FPT − {o}" for o in others) + " |",
            "|---|---|" + "---|" * len(others),
            *rows,
        ]
    else:
        out.append("No FPT setting with pretrained init and a baseline on the same task.")
    return out + method_answers(settings) + lm_answers(settings) + change_answers(settings)


# ---- environment -----------------------------------------------------------------------------------------------------


def environment_lines(records: list[Record]) -> list[str]:
    """Versions, hardware and commits of every record (distinct values with counts); dirty trees are flagged."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        env = r.get("environment") or {}
        for name, version in (env.get("versions") or {}).items():
            counts[name]["not recorded" if version is None else str(version)] += 1
        hw = env.get("hardware") or {}
        counts["hardware"][f"{hw.get('cpu')} ({hw.get('cpu_count')} cores), {hw.get('device')}"
                           + (f" {hw['gpu']}" if hw.get("gpu") else "")] += 1  # fmt: skip
        counts["torch threads"][str(hw.get("torch_threads"))] += 1
        counts["platform"][str(hw.get("platform"))] += 1
        git = env.get("git") or {}
        counts["commit"][f"{git.get('commit')}" + (" (uncommitted changes)" if git.get("dirty") else "")] += 1
    lines = []
    for name, values in counts.items():
        text = "; ".join(f"{v} ({n} runs)" if len(values) > 1 else v for v, n in values.most_common())
        lines.append(f"- {name}: {text}")
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
    return [
        f"# Report: {', '.join(sweeps) or 'results'}",
        "",
        f"Rendered by `fpt report` from {', '.join(f'`{p}`' for p in paths)}: {len(records)} runs "
        f"({len(failed)} failed), {len(settings)} settings, {len({s.task for s in settings})} tasks. Every number "
        f"below is computed from {'that file' if len(paths) == 1 else 'those files'}.",
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
        text = table(ablation, lambda s: ", ".join(s.groups), "trained groups \\ task", Setting.cell, by_task)[0]
        md += ["", "## Which parameters train: groups × task (FPT, pretrained, test accuracy, %)", "", text]
    return md + [
        "",
        f"## Trained weights: {view} (count, and % of the model's weights)",
        "",
        table(settings, lambda s: s.label, "model \\ task", params_cell, by_task)[0],
        "",
        f"## Steps to converge (first validation at ≥ {CONVERGED:.0%} of the run's best val accuracy)",
        "",
        table(settings, lambda s: s.label, "model \\ task", steps_cell, by_task)[0],
        "",
        "## Learning-rate selection",
        "",
        selection_table(settings),
    ]


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
    md += moved_section(settings, runs_dir, out)
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
