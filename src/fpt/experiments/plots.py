"""The report's figures, drawn with matplotlib's object API (no pyplot, no display): PNGs from result records."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from fpt.errors import FPTError

if TYPE_CHECKING:
    from fpt.experiments.settings import Record, Setting


def panels(n: int, width: float = 4.2, height: float = 3.2, ncols: int = 3) -> tuple[Figure, list[Any]]:
    """A figure of n panels, `ncols` a row, room above for a title."""
    cols = min(n, ncols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def title(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (a one-panel figure is narrow)."""
    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 13)), fontsize="medium")


def by_task(settings: list[Setting]) -> dict[str, list[Setting]]:
    out: dict[str, list[Setting]] = {}
    for s in settings:
        out.setdefault(s.task, []).append(s)
    return out


def axis_label(split: str, metric: str) -> str:
    return f"{split} accuracy (%)" if metric == "accuracy" else f"{split} {metric.upper()} (lower is better)"


MARKERS = "osD^v<>p*h"
SHARED_LEGEND = 6  # settings past which a figure's panels share one legend


def colours(settings: list[Setting]) -> dict[str, str]:
    """One colour per setting label, the same on every panel and in both figures (a panel without an earlier label's
    runs would otherwise shift matplotlib's colour cycle): matplotlib's ten cycle colours, or tab20's twenty where a
    report has more labels (the methods comparison has eleven settings a task; C0 would mark two of them)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    labels = list(dict.fromkeys(s.label for s in settings))
    if len(labels) <= 10:
        return {label: f"C{i}" for i, label in enumerate(labels)}
    return {label: to_hex(colormaps["tab20"](i % 20)) for i, label in enumerate(labels)}


def markers(settings: list[Setting]) -> dict[str, str]:
    """One marker per setting label: "o" for the first twenty, then another shape per twenty, so that no two labels
    share both colour and marker up to two hundred."""
    labels = list(dict.fromkeys(s.label for s in settings))
    return {label: MARKERS[(i // 20) % len(MARKERS)] for i, label in enumerate(labels)}


def shared_legend(colour: dict[str, str]) -> bool:
    """Whether a figure of these settings (`colour`: one entry a setting) shows one legend beside its panels."""
    return len(colour) > SHARED_LEGEND


def legends(fig: Figure, axes: list[Any], shared: bool) -> None:
    """A legend in each panel, or (`shared`: more settings than SHARED_LEGEND, whose entries would hide a panel's
    lines and points) one legend of every panel's labels beside the panels."""
    if not shared:
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="x-small")
        return
    found = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(found.values()), list(found), loc="outside right upper", fontsize="small")


def learning_curves(settings: list[Setting], path: Path) -> None:
    """Validation accuracy against step, one panel per task, one line per setting (its chosen lr): the mean over
    seeds, with a band from the lowest to the highest seed."""
    from fpt.experiments.settings import scale_of

    tasks = by_task(settings)
    colour, marker = colours(settings), markers(settings)
    shared = shared_legend(colour)  # one legend of labels beside the panels; each task's lrs: the lr table
    fig, axes = panels(len(tasks))
    for ax, (task, group) in zip(axes, tasks.items(), strict=True):
        for s in group:
            curves = [{row["step"]: row[f"val_{s.metric}"] for row in r.get("curve") or []} for r in s.ok]
            steps = sorted({step for c in curves for step in c})
            if not steps:
                continue
            values = [[scale_of(s.metric) * c[step] for c in curves if step in c] for step in steps]
            (line,) = ax.plot(
                steps,
                [np.mean(v) for v in values],
                marker=marker[s.label],
                markersize=3,
                color=colour[s.label],
                label=s.label if shared else f"{s.label} (lr {s.lr:g}, n={len(curves)})",
            )
            ax.fill_between(
                steps, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.2
            )
        ax.set(title=task, xlabel="step", ylabel=axis_label("val", group[0].metric))
        ax.grid(alpha=0.3)
    legends(fig, axes, shared)
    where = "; each lr: the report's lr table" if shared else ""
    title(fig, f"Validation accuracy vs training step at each setting's chosen lr{where} (line: mean over seeds; band: "
               "min–max)")  # fmt: skip
    fig.savefig(path, dpi=100)


def accuracy_vs_params(settings: list[Setting], path: Path) -> None:
    """Test accuracy (mean ± 95% CI over seeds) against the number of trained parameters, log x, one panel a task."""
    from fpt.experiments.settings import mean_ci, scale_of

    tasks = by_task(settings)
    colour, marker = colours(settings), markers(settings)
    fig, axes = panels(len(tasks))
    for ax, (task, group) in zip(axes, tasks.items(), strict=True):
        for s in group:
            if not s.ok:
                continue
            m, half = mean_ci([scale_of(s.metric) * v for v in s.values(f"test_{s.metric}")])
            params = float(np.mean(s.values("trainable_params")))
            ax.errorbar([params], [m], yerr=[[half or 0.0], [half or 0.0]], fmt=marker[s.label], capsize=3,
                        label=s.label, color=colour[s.label])  # fmt: skip
        ax.set_xscale("log")
        ax.set(title=task, xlabel="trained parameters", ylabel=axis_label("test", group[0].metric))
        ax.grid(alpha=0.3, which="both")
    legends(fig, axes, shared_legend(colour))
    title(fig, "Test accuracy vs number of trained parameters (mean ± 95% CI over seeds, chosen lr)")
    fig.savefig(path, dpi=100)


def attention_run(records: list[Record], settings: list[Setting], runs_dir: Path) -> Path | None:
    """The trained weights of a finished bit-memory FPT run with pretrained init (chosen lr, lowest seed first)."""
    from fpt.shipping.patch import TRAINED_FILE

    chosen = {r["run_id"] for s in settings for r in s.ok}
    candidates = [
        r
        for r in records
        if r["status"] == "ok" and r["task"] == "bit-memory" and r["model"] == "fpt" and r["init"] == "pretrained"
    ]
    candidates.sort(key=lambda r: (r["run_id"] not in chosen, r["seed"]))
    for r in candidates:
        path = runs_dir / r["run_id"] / TRAINED_FILE
        if path.is_file():
            return path
    return None


def attention_maps(
    records: list[Record],
    settings: list[Setting],
    runs_dir: Path,
    path: Path,
    backbone: str | None = None,
    backbone_path: str | None = None,
) -> str:
    """The paper's Figure 5: attention of each layer of a frozen backbone (mean over heads) on one bit-memory test
    example, through the trained input layer and layer norms of a bit-memory FPT run from `runs_dir` when there is
    one, else through an untrained input layer. Returns the caption."""
    import torch

    from fpt.config import make_config
    from fpt.shipping.patch import TRAINED_FORMAT, read_file, read_safetensors
    from fpt.tasks import get_task
    from fpt.train import build_model, load_trained

    trained = attention_run(records, settings, runs_dir)
    if trained is not None:
        tensors, meta = read_safetensors(read_file(trained), str(trained), TRAINED_FORMAT)
        cfg = make_config(meta["config"])
        source = f"the trained input layer, layer norms and positions of run {trained.parent.name}"
    else:  # the sweep's bit-memory FPT config (else any FPT run's backbone), untrained
        fpt_runs = [r for r in records if r["model"] == "fpt"]
        bit_memory = [r for r in fpt_runs if r["task"] == "bit-memory"]
        values = bit_memory[0]["config"] if bit_memory else {**(fpt_runs[0]["config"] if fpt_runs else {})}
        values = {**values, "task": "bit-memory", "init": "pretrained", "train": "input,output,layernorm,positional"}
        if not bit_memory:
            values["task_args"] = {}
        if backbone is not None:
            values |= {"backbone": backbone, "backbone_path": backbone_path}
        cfg = make_config({**values, "seed": 0})
        source = f"an untrained input layer (no trained bit-memory FPT run in {runs_dir})"
        tensors = None
    task = get_task(cfg.task, **cfg.task_args)
    if cfg.task != "bit-memory":
        raise FPTError(f"attention maps need a bit-memory run, found task {cfg.task!r}")
    model = build_model(cfg, task).eval()
    if getattr(getattr(model, "method", None), "tokens", 0):
        raise FPTError(f"attention maps are drawn over the inputs alone; method {cfg.method!r} adds prompt tokens")
    if tensors is not None:
        load_trained(model, tensors)
    hf = getattr(getattr(model, "backbone", None), "model", None)
    if not hasattr(hf, "set_attn_implementation"):
        raise FPTError(f"backbone {cfg.backbone!r} does not expose its attention weights")
    x, y = task.splits["test"][0]  # x (T, patch): 5 patterns then the masked query, y: the queried pattern's bits
    spec = task.spec
    per_pattern = spec.num_outputs
    patterns = x[:-per_pattern].reshape(-1, spec.num_outputs * spec.predictions_per_token)  # (k, bits) ±1
    target = int((patterns == (2 * y - 1)).all(dim=1).float().argmax())
    hf.set_attn_implementation("eager")  # SDPA does not return attention weights
    with torch.inference_mode():
        mask = torch.ones(1, x.shape[0], dtype=torch.long)
        attentions = hf(
            inputs_embeds=model.input_layer(x[None]), attention_mask=mask, output_attentions=True
        ).attentions
    maps = [a[0].mean(0).numpy() for a in attentions]  # per layer (T, T), mean over heads

    fig, axes = panels(len(maps), width=3.6, height=3.8)
    for layer, (ax, attn) in enumerate(zip(axes, maps, strict=True)):
        ax.imshow(attn, cmap="viridis", interpolation="nearest")
        for edge in range(per_pattern, x.shape[0], per_pattern):
            ax.axhline(edge - 0.5, color="white", lw=0.4, alpha=0.6)
            ax.axvline(edge - 0.5, color="white", lw=0.4, alpha=0.6)
        ax.set(title=f"layer {layer + 1}", xlabel="key token", ylabel="query token")
    trained_text = "trained input layer" if tensors is not None else "untrained input layer"
    title(
        fig,
        f"Attention of frozen {cfg.backbone} ({cfg.init}) on a bit-memory example, mean over heads, {trained_text}; "
        f"{len(patterns)} patterns then the query (white lines), the query is pattern {target + 1}",
    )
    fig.savefig(path, dpi=100)
    return (
        f"Attention maps of the frozen `{cfg.backbone}` backbone ({cfg.init} weights) on bit-memory test example 0, "
        f"mean over heads per layer, through {source}. Rows are query tokens, columns key tokens; white lines separate "
        f"the {len(patterns)} stored patterns and the masked query ({per_pattern} tokens each); the query is pattern "
        f"{target + 1}."
    )
