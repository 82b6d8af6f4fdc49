"""The report's answers, rendered from settings: pretrained vs random init, FPT vs each baseline, which weights
should train (every other way against FPT), does the language model help, and what one config change does. Each
difference is in points (or the task's error metric) with its 95% Welch interval.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from fpt.config import TrainConfig, identity
from fpt.experiments.settings import Setting, digits_of, grouped_by_task, params_cell, scale_of, welch
from fpt.freeze import PAPER_GROUPS


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
    return grouped_by_task([s for s in settings if is_fpt(s)])


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
