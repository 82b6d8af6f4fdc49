"""The report's what-moved section: from each run's moved.json (fpt.moved), a layers × groups heatmap per setting and
a table of each group's relative change, averaged over the seeds of the setting's chosen lr."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from statistics import mean

import numpy as np
from matplotlib.colors import LogNorm

from fpt.experiments.settings import Record, Setting
from fpt.freeze import GROUPS
from fpt.moved import MOVED_FILE

Cells = dict[tuple[str, int | None], float]  # (group, layer or None outside the blocks) → relative change


def moved_of(record: Record, runs_dir: Path | None) -> dict | None:
    """A record's moved.json: read beside its result.json (fpt.experiments.report.load_results keeps it as "moved"),
    or from its sweep run folder RUNS_DIR/<run_id>/."""
    if isinstance(record.get("moved"), dict):
        return record["moved"]
    path = runs_dir / str(record.get("run_id")) / MOVED_FILE if runs_dir is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def setting_cells(moved: list[dict]) -> tuple[Cells, dict[str, float]]:
    """Mean over seeds of each cell's relative change, and of each group's over all its layers."""
    cells: dict[tuple[str, int | None], list[float]] = defaultdict(list)
    groups: dict[str, list[float]] = defaultdict(list)
    for record in moved:
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for c in record["cells"]:
            if c["relative_change"] is not None:
                cells[(c["group"], c["layer"])].append(c["relative_change"])
            sums[c["group"]][0] += c["change_norm"] ** 2
            sums[c["group"]][1] += c["initial_norm"] ** 2
        for g, (change, initial) in sums.items():
            if initial > 0:
                groups[g].append(math.sqrt(change / initial))
    return {k: mean(v) for k, v in cells.items()}, {g: mean(v) for g, v in groups.items()}


def heatmaps(found: list[tuple[Setting, Cells, int]], path: Path, scale: LogNorm, what: str = "") -> None:
    """One panel per setting: rows the backbone's layers (top layer first) and a row for what lies outside them,
    columns the trained groups; colour and text the relative change ‖θ − θ₀‖ / ‖θ₀‖ (log scale `scale`)."""
    from fpt.experiments.plots import panels, title

    fig, axes = panels(len(found), width=4.6, height=3.6)
    image = None
    for ax, (s, cells, layers) in zip(axes, found, strict=True):
        groups = [g for g in GROUPS if any(k[0] == g for k in cells)]
        rows: list[int | None] = [*range(layers - 1, -1, -1), None]
        grid = np.array([[cells.get((g, r), np.nan) for g in groups] for r in rows])
        image = ax.imshow(np.where(grid > 0, grid, np.nan), norm=scale, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.1e}" if v < 0.01 else f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
        ax.set_xticks(range(len(groups)), groups, rotation=30, fontsize=7)
        ax.set_yticks(range(len(rows)), [str(r) if r is not None else "outside" for r in rows], fontsize=7)
        ax.set_title(f"{s.task}: {s.label}", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, label="relative change ‖θ − θ₀‖ / ‖θ₀‖")
    title(fig, f"What moved{what}: layer × group (mean over seeds at the chosen lr; LoRA: ‖B·A·scale‖ / ‖W‖)")
    fig.savefig(path, dpi=120)


def figure_name(task: str) -> str:
    """The what-moved figure of one task in a report of several: moved_<task>.png (a label's odd characters as _)."""
    return "moved_" + re.sub(r"[^A-Za-z0-9._-]+", "_", task) + ".png"


def section(settings: list[Setting], runs_dir: Path | None, out: Path) -> list[str]:
    """The report's lines, and its heatmaps, for the settings whose runs left moved.json; none if no run did. A report
    of one task draws OUT/moved.png; one of several draws a figure per task, OUT/moved_<task>.png, on one colour
    scale (a single figure of a large sweep's every setting would be tens of thousands of pixels tall)."""
    found, table = [], []
    for s in settings:
        moved = [m for m in (moved_of(r, runs_dir) for r in s.ok) if m is not None]
        if not moved:
            continue
        cells, groups = setting_cells(moved)
        found.append((s, cells, max(m["layers"] for m in moved)))
        table.append((s, groups, len(moved)))
    if not found:
        return []
    values = [v for _, cells, _ in found for v in cells.values() if v > 0]
    scale = LogNorm(vmin=min(values, default=1e-6), vmax=max(values, default=1.0))
    tasks = list(dict.fromkeys(s.task for s, _, _ in found))
    if len(tasks) == 1:
        heatmaps(found, out / "moved.png", scale)
        images = ["![what moved](moved.png)"]
    else:
        for task in tasks:
            heatmaps([f for f in found if f[0].task == task], out / figure_name(task), scale, f" on {task}")
        images = [f"![what moved on {task}]({figure_name(task)})" for task in tasks]
    columns = [g for g in GROUPS if any(g in groups for _, groups, _ in table)]
    lines = [
        "## What moved (relative change ‖θ − θ₀‖ / ‖θ₀‖ of each trained group, best-on-validation weights)",
        "",
        "Per group, over all its tensors: sqrt(Σ ‖θ − θ₀‖²) / sqrt(Σ ‖θ₀‖²), mean over the seeds of the chosen lr; "
        "for a LoRA adapter, its update B·A·scale against the weights it changes (fpt.moved).",
        "",
        "| task | setting | " + " | ".join(columns) + " | seeds |",
        "|---|---|" + "---|" * (len(columns) + 1),
    ]
    for s, groups, n in table:
        text = [f"{groups[g]:.3g}" if g in groups else "–" for g in columns]
        lines.append(f"| {s.task} | {s.label} | " + " | ".join(text) + f" | {n} |")
    return [*lines, "", *(line for image in images for line in (image, ""))][:-1]
