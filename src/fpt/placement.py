"""Where a run computes: how many CPU threads torch uses, and whether this CPU computes in bf16 natively.

torch's default is one thread per core, whatever else runs: beside another busy process on a 2-core machine, two
threads then wait on each other at every parallel op (bit-xor, 100 steps: 91 s at the default vs 17 s with one
thread). Without --threads, fpt takes the cores that are free now: all of them, less those other processes keep
busy over a short look at the machine's CPU time.

bf16 autocast pays only on a CPU with bf16 instructions (AVX512-BF16, AMX): elsewhere oneDNN emulates it and a step
is many times slower than in fp32 (docs/performance.md), so fpt says so, with the fix, before such a run trains.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from fpt.results import cpu_shares, cpu_ticks

LOOK_SECONDS = 0.3  # how long the machine's CPU time is watched before choosing


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def free_cores(seconds: float = LOOK_SECONDS) -> int:
    """Cores not kept busy by other processes over the next `seconds` (this process idles meanwhile); all of the
    available ones where the machine's CPU time cannot be read."""
    cores = available_cores()
    before = cpu_ticks()
    time.sleep(seconds)
    shares = cpu_shares(before, cpu_ticks())
    if shares is None:
        return cores
    busy = shares["busy"] * (os.cpu_count() or cores)  # /proc/stat counts every core of the machine
    return max(1, min(cores, round(cores - busy)))


def available_memory() -> int | None:
    """Bytes of memory the machine can give a new allocation now (MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def describe_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} TB"


def set_threads(requested: int | None) -> int:
    """torch's CPU threads: `requested` (--threads), else the free cores, saying so when that is fewer than all."""
    if requested:
        torch.set_num_threads(requested)
        return requested
    cores, free = available_cores(), free_cores()
    torch.set_num_threads(free)
    if free < cores:
        print(
            f"fpt: {cores - free} of {cores} cores are busy with other work; training on {free} thread"
            f"{'s' if free > 1 else ''} (--threads N to choose)",
            file=sys.stderr,
        )
    return free


def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions oneDNN uses (AVX512-BF16 or AMX on x86, the BF16 extension on Arm)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def emulates_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls on `device` are emulated: a CPU without bf16 instructions (many times slower than fp32)."""
    return device.type == "cpu" and not native_bf16()


def check_precision(precision: str, device: torch.device) -> bool:
    """Say on stderr when bf16 autocast would run on a CPU without bf16 instructions (emulated, many times slower than
    fp32); True if it was said. A run is not changed: its precision is part of its config and of its numbers."""
    if precision != "bf16" or not emulates_bf16(device):
        return False
    print(
        "fpt: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so --precision bf16 runs emulated, many times "
        "slower than fp32 here (docs/performance.md); --precision fp32 trains faster on it",
        file=sys.stderr,
    )
    return True
