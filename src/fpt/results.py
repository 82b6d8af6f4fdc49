"""Results are data: atomic JSON/JSONL writes and the environment record that travels with every number."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from fpt.version import __version__

PACKAGES = ("fpt", "torch", "transformers", "safetensors", "numpy", "scikit-learn", "aeon", "pydantic")


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write `text` (str or bytes) to `path` via a temp file in the same folder and a rename: never half-written.
    The file gets the mode a plain open() gives (0666 less the umask), not the temp file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[Any]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


CURVE_FILE = "curve.jsonl"  # a run's learning curve, one validation a line: fpt.train writes it beside result.json


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """The learning curve of a run folder (fpt train --out)."""
    return read_jsonl(Path(run_dir) / CURVE_FILE)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["fpt"] = __version__  # also when running from a source tree (PYTHONPATH=src) rather than the installed package
    return out


@cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "cpu family", "model", ...); {} off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = (line.split(":", 1) for line in text.split("\n\n", 1)[0].splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields}


def cpu_name() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_model() -> str | None:
    """The CPU as "family F model M stepping S", None off Linux: a VM often names its CPU by vendor alone ("AMD
    EPYC"), and these tell the generation apart."""
    info = cpuinfo()
    if "cpu family" not in info:
        return None
    return f"family {info['cpu family']} model {info.get('model')} stepping {info.get('stepping')}"


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's CPU kernels run
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@cache
def git_commit() -> dict[str, Any]:
    """The commit of the fpt source tree (None outside a git checkout) and whether it had uncommitted changes."""
    return source_state(Path(__file__).resolve().parent)


def source_state(here: Path) -> dict[str, Any]:
    """HEAD's commit of the checkout holding the folder `here`, and whether tracked files under `here` differ from it.
    Only that folder counts: a sweep appending to its committed results file, or an edited README, changes no code
    that ran (each record holds its own config)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            != ""
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_ticks() -> list[int] | None:
    """The whole machine's CPU time since boot, in ticks: /proc/stat's user, nice, system, idle, iowait, irq,
    softirq, steal; None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(n) for n in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def cpu_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    """Shares of the machine's CPU time between two cpu_ticks(): busy (neither idle nor waiting, this process and
    any other) and steal (taken by the hypervisor for other guests: on a shared VM, cores the run did not get)."""
    if before is None or after is None:
        return None
    d = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(d)
    if total <= 0:
        return None
    return {"busy": (total - d[3] - d[4] - d[7]) / total, "steal": d[7] / total}


def environment(device: torch.device) -> dict[str, Any]:
    return {"versions": versions(), "hardware": hardware(device), "git": git_commit()}
