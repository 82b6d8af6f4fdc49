"""The printed table and BENCHMARKS.md, rendered from an `fpt bench` record (never typed by hand)."""

from __future__ import annotations

import sys
from typing import Any

from fpt.errors import FPTError
from fpt.performance.bench import ABLATIONS, FORMAT, TARGETS


def table(record: dict[str, Any]) -> list[list[str]]:
    """The rows of the results table: a header, then one line per shape and row."""
    lines = [["shape", "row", "step ms", "samples/s", "tokens/s", "peak MiB", "GFLOP/step", "GFLOP/s", "MFU"]]
    for shape in record["shapes"]:
        where = f"{shape['name']} {shape['batch']}×{shape['tokens']}"
        for name, r in shape["rows"].items():
            lines.append([
                where,
                name,
                f"{r['step_seconds'] * 1e3:.1f}",
                f"{r['samples_per_second']:,.1f}",
                f"{r['tokens_per_second']:,.0f}",
                "–" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:,.0f}",
                f"{r['flops_per_step'] / 1e9:,.1f}",
                f"{r['flops_per_second'] / 1e9:,.1f}",
                "–" if r["mfu"] is None else f"{r['mfu']:.1%}",
            ])  # fmt: skip
        for m in (shape["matmul"], shape.get("matmul_bf16")):  # the peak of MFU; bf16's beside the fpt-bf16 row
            if m is None:
                continue
            peak = f"{m['flops_per_second'] / 1e9:,.1f}"
            kernel = f" ({m['kernel']})" if "kernel" in m else ""
            lines.append([where, f"matmul {m['n']}² {m['dtype']}{kernel}", "", "", "", "", "", peak, "100%"])
    return lines


def value_and_bound(t: dict[str, Any]) -> tuple[str, str]:
    if t["target"] == "same_loss":
        return f"{t['value']:.2e}", f"{t['bound']:.0e}"
    return f"{t['value']:.3g}", f"{t['bound']:g}"


def target_line(t: dict[str, Any]) -> str:
    value, bound = value_and_bound(t)
    return f"{t['shape']}: {t['what']}: {value} (target {t['op']} {bound}) {'met' if t['met'] else 'NOT met'}"


def same_loss_line(shape: dict[str, Any]) -> str:
    check = shape["same_loss"]
    return (
        f"Same numerics ({shape['name']}): on the same batch with the same weights and dropout off, fpt's loss is "
        f"{check['fpt_loss']:.6f} and the reference's {check['reference_loss']:.6f}; their input-layer gradients "
        f"differ by {check['input_grad_relative_difference']:.1e} (relative)."
    )


def flops_line(shape: dict[str, Any]) -> str:
    """Counted FLOPs side by side: the work a row's time ratio is up against."""
    flops = {name: row["flops_per_step"] for name, row in shape["rows"].items()}
    return (
        f"Counted work ({shape['name']}): fpt's step is {flops['fpt'] / flops['reference']:.2f}× the reference's "
        f"FLOPs (the last layer runs on the read-out tokens only) and {flops['fpt'] / flops['full']:.2f}× full "
        f"fine-tuning's (no weight gradients); inference is {flops['inference'] / flops['fpt']:.2f}× fpt's step."
        if "inference" in flops
        else f"Counted work ({shape['name']}): fpt's step is {flops['fpt'] / flops['reference']:.2f}× the "
        f"reference's FLOPs and {flops['fpt'] / flops['full']:.2f}× full fine-tuning's."
    )


def paths_line(shape: dict[str, Any]) -> str | None:
    """What each hand-written CPU path buys on this machine: step time with it off ÷ fpt's step (every path this
    CPU's default has on), and with every path on, where the default leaves one off."""
    ratios = shape["ratios"]
    parts = [
        f"{k.removeprefix('fpt_no_').removesuffix('_time')} {v:.2f}×"
        for k, v in ratios.items()
        if k.startswith("fpt_no_")
    ]
    if "fpt_plain_time" in ratios:
        parts.append(f"all off {ratios['fpt_plain_time']:.2f}×")
    if not parts:
        return None
    line = (
        f"Hand-written paths ({shape['name']}): step time with the path off ÷ fpt's step: {', '.join(parts)} "
        "(above 1: the path pays here)."
    )
    if "fpt_all_time" in ratios:
        line += f" With every path on (those this CPU's default leaves off too): {ratios['fpt_all_time']:.2f}×."
    same = [name for name in shape.get("skipped") or {} if name in ABLATIONS]
    if same:
        line += f" Not run, as they are fpt's step on this CPU: {', '.join(same)}."
    return line


def references_line(shape: dict[str, Any]) -> str | None:
    """fpt against each reference, and why a reference did not run."""
    labels = {"sdpa": "SDPA", "eager": "eager", "compiled": "compiled SDPA"}
    parts = []
    for key, label in labels.items():
        name = f"fpt_vs_reference_{key}_speed"
        if name in shape["ratios"]:
            parts.append(f"{label} {shape['ratios'][name]:.2f}×")
    skipped = shape.get("skipped") or {}
    parts += [f"{name} not run ({why})" for name, why in skipped.items() if name not in ABLATIONS]
    if not parts:
        return None
    return f"References ({shape['name']}): fpt's samples/s ÷ the reference's: {'; '.join(parts)}."


def cpu_kind(record: dict[str, Any]) -> str:
    """'AMD EPYC family 23 model 1 (AVX2)': the CPU a record ran on, as the bench records it."""
    hw = record["environment"]["hardware"]
    model = hw.get("cpu_model", "model not recorded").split(" stepping")[0]
    return f"{hw['cpu']} {model}" + (f" ({hw['cpu_capability']})" if hw.get("cpu_capability") else "")


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def kinds_table(records: dict[str, dict[str, Any]]) -> str:
    """One line per CPU kind and backbone: the latest one-thread CPU record of that kind and backbone among
    `records` (path → record) that ran fpt, a reference and full fine-tuning (a narrower run checks one figure; it
    does not stand for the machine), its targets per shape (in the record's shape order, e.g. bit-memory / long) with
    ✗ where one is not met, as markdown."""
    latest: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for path, record in sorted(records.items(), key=lambda item: item[1]["finished_at"]):
        if record["settings"]["device"] == "cpu" and record["settings"]["threads"] == 1:
            if "cpu_model" in record["environment"]["hardware"] and {"fpt", "reference", "full"} <= set(
                record["settings"]["rows"]
            ):
                latest[cpu_kind(record), record["settings"]["backbone"]] = (path, record)
    names = [name for name in TARGETS if name not in ("fpt_mfu_gpu", "same_loss")]
    lines = [
        "| CPU kind | backbone | record | " + " | ".join(TARGETS[n][0].split(" (")[0] for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for (kind, backbone), (path, record) in sorted(latest.items()):
        cells = []
        for name in names:
            found = [t for t in record["targets"] if t["target"] == name]
            text = " / ".join(number(t["value"]) + ("" if t["met"] else " ✗") for t in found) or "–"
            cells.append(text)
        lines.append(f"| {kind} | {backbone} | `{path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bf16_table(records: dict[str, dict[str, Any]]) -> str:
    """fpt's fp32 step against its bf16-autocast step (the `fpt-bf16` row), per record (path → record) and shape, as
    markdown: the CPU kind (bf16 pays only where the CPU has bf16 instructions), backbone, shape, both step times and
    the speed ratio measured in the same rounds."""
    lines = [
        "| CPU kind | backbone | shape | fp32 step (ms) | bf16 step (ms) | bf16 speed-up | record |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for path, record in records.items():
        for shape in record["shapes"]:
            if "bf16_vs_fpt_speed" in shape["ratios"]:
                fp32, bf16 = (shape["rows"][r]["step_seconds"] * 1e3 for r in ("fpt", "fpt-bf16"))
                lines.append(
                    f"| {cpu_kind(record)} | {record['settings']['backbone']} | "
                    f"{shape['name']} {shape['batch']}×{shape['tokens']} | "
                    f"{fp32:,.0f} | {bf16:,.0f} | {shape['ratios']['bf16_vs_fpt_speed']:.2f}× | `{path}` |"
                )
    return "\n".join(lines)


def print_text(record: dict[str, Any], file=sys.stdout) -> None:
    lines = table(record)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))),
              file=file)  # fmt: skip
    for shape in record["shapes"]:
        if shape["same_loss"]:
            print(same_loss_line(shape), file=file)
        for line in (references_line(shape), paths_line(shape)):
            if line:
                print(line, file=file)
    for t in record["targets"]:
        print(target_line(t), file=file)
    s, load = record["settings"], record["load_average"]
    print(
        f"{s['device']} {s['precision']}, {s['threads']} threads, {s['repeats']} repeats after {s['warmup']} warm-up; "
        f"load average {load['before'][0]:.2f} → {load['after'][0]:.2f}{cpu_time_text(record)}; "
        f"memory: {record['methods']['memory']}",
        file=file,
    )


def cpu_time_text(record: dict[str, Any]) -> str:
    """The run's machine CPU time shares as a clause (", machine CPU time over the run: 51% busy, 0.1% stolen by the
    hypervisor"), or "" where the record has none."""
    shares = record.get("cpu_time")
    if not shares:
        return ""
    return f", machine CPU time over the run: {shares['busy']:.0%} busy, {shares['steal']:.1%} stolen by the hypervisor"


def render_markdown(record: dict[str, Any]) -> str:
    """BENCHMARKS.md from a bench record: the command, the table, the targets, the hardware and versions."""
    if record.get("format") != FORMAT:
        raise FPTError(f"not an fpt bench record (format {record.get('format')!r}, expected {FORMAT!r})")
    env, s = record["environment"], record["settings"]
    git = env["git"]
    lines = table(record)
    out = [
        "# Benchmarks",
        "",
        "Rendered by `fpt bench --render` from the JSON record a run of `fpt bench --json` wrote; do not edit by hand.",
        "",
        f"Command: `{record['command']}`",
        "",
        "| " + " | ".join(lines[0]) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(lines[0]))) + "|",
        *("| " + " | ".join(c or " " for c in line) + " |" for line in lines[1:]),
        "",
        "Rows: `fpt` is fpt's FPT training step; `reference` the same model as a user would write it with "
        "transformers (AutoModel with its default SDPA attention, frozen by parameter name, plain Adam), "
        "`reference-eager` the same with eager attention, `reference-compiled` the SDPA one under torch.compile; "
        "`full` full fine-tuning (`--train all`); `reservoir` the head trained on cached frozen features; "
        "`inference` evaluation under `torch.inference_mode`; `fpt-no-<path>` fpt's step with one hand-written CPU "
        "path switched off (`fpt-plain`: all of them; `fpt-all`: every path on, where this CPU's default leaves one "
        "off); `matmul` a dense square matmul (the faster of torch.matmul and, on a CPU, oneDNN's), the peak MFU "
        "is measured against (`fpt-bf16`'s against the same matmul in bfloat16). The speed target is read against "
        "the fastest reference.",
        "",
        "## Targets",
        "",
        "| shape | target | measured | bound | |",
        "|---|---|---:|---:|---|",
    ]
    for t in record["targets"]:
        value, bound = value_and_bound(t)
        out.append(
            f"| {t['shape']} | {t['what']} | {value} | {t['op']} {bound} | {'met' if t['met'] else '**not met**'} |"
        )
    out.append("")
    for shape in record["shapes"]:
        out += [same_loss_line(shape), ""] if shape["same_loss"] else []
        out += [flops_line(shape), ""] if {"fpt", "reference", "full"} <= set(shape["rows"]) else []
        out += [line for line in (references_line(shape), paths_line(shape)) if line for line in (line, "")]
        if "reservoir" in shape["rows"]:
            out += [f"Reservoir ({shape['name']}): {shape['rows']['reservoir']['note']}, once.", ""]
        if "bf16_vs_fpt_speed" in shape["ratios"]:
            out += [
                f"bf16 autocast ({shape['name']}, `--precision bf16`, weights and optimizer state fp32): `fpt-bf16` "
                f"samples/s ÷ `fpt`'s: {shape['ratios']['bf16_vs_fpt_speed']:.2f}×.",
                "",
            ]
    hw = env["hardware"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    out += [
        "",
        "## Setup",
        "",
        f"- Device: {hw['device']}"
        + (f" ({hw['gpu']})" if hw.get("gpu") else "")
        + f"; CPU: {hw['cpu']}"
        + "".join(f", {hw[k]}" for k in ("cpu_model", "cpu_capability") if hw.get(k))
        + f", {hw['cpu_count']} cores, torch threads {s['threads']}; {hw['platform']}",
        f"- Precision {s['precision']}, compile {s['compile']}, backbone {s['backbone']}, dropout {s['dropout']}, "
        f"{s['repeats']} timed repeats after {s['warmup']} warm-up steps per row",
        f"- Load average (1 min) {record['load_average']['before'][0]:.2f} before, "
        f"{record['load_average']['after'][0]:.2f} after{cpu_time_text(record)}; run took {record['seconds']:.0f} s, "
        f"finished {record['finished_at']}",
        f"- Commit {git['commit']}" + (" (with uncommitted changes)" if git["dirty"] else " (clean tree)"),
        f"- Versions: {versions}",
        "",
        "Methods: " + "; ".join(f"{k}: {v}" for k, v in record["methods"].items()) + ".",
        "",
    ]
    return "\n".join(out)
