"""Tables rendered from result files (never typed by hand)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from fpt.errors import FPTError


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Result records from result.json files, folders holding them (searched recursively) or results JSONL files."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.rglob("result.json")) if path.is_dir() else [path]
        for file in files:
            try:
                text = file.read_text()
                rows.extend(
                    json.loads(line) for line in text.splitlines() if line.strip()
                ) if file.suffix == ".jsonl" else rows.append(json.loads(text))
            except (OSError, json.JSONDecodeError) as err:
                raise FPTError(f"cannot read results from {file}: {err}") from None
    return rows


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f} (n=1)"
    return f"{100 * mean(values):.1f} ± {100 * stdev(values):.1f} sd (n={len(values)})"


def pivot(rows: list[dict[str, Any]], row_key: str, col_key: str, metric: str = "test_accuracy") -> str:
    """A markdown table: one row per `row_key` value, one column per `col_key` value, cells in % of `metric`."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        values[(str(r[row_key]), str(r[col_key]))].append(r[metric])
    row_names = list(dict.fromkeys(str(r[row_key]) for r in rows))
    col_names = list(dict.fromkeys(str(r[col_key]) for r in rows))
    lines = [f"| {row_key} \\ {col_key} | " + " | ".join(col_names) + " |", "|---|" + "---|" * len(col_names)]
    for name in row_names:
        cells = [cell(values[(name, c)]) if values[(name, c)] else "–" for c in col_names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
