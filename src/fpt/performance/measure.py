"""Measuring a step: time (interleaved repeats), counted FLOPs, and on a CPU the high-water mark of live tensor
bytes; the dense matmul rows that MFU is read against. `fpt bench` (bench.py) builds the rows and reads the ratios."""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from fpt.performance import ops

MIN_TIMED_SECONDS = 0.05  # a repeat runs a step this long at least (several in a row for tiny steps)


@dataclass
class Row:
    """A row's step (a closure over its model and batch), what it holds (for memory) and how many it trains."""

    step: Callable[[], Any]
    holds: Callable[[], list[torch.Tensor]]
    trainable_params: int
    note: str = ""
    model: nn.Module | None = None  # fpt's model of the row: compiled (with --compile) once FLOPs are counted


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def module_tensors(*modules: nn.Module) -> list[torch.Tensor]:
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


class TensorBytes(TorchDispatchMode):
    """Bytes of live tensor storages, and their high-water mark, while the mode is on: the storages of `alive`
    (parameters, optimizer state, the batch) plus every storage an operator creates, each counted until it is freed.
    Views share their base's storage and are counted once; allocator slack and the Python heap are not counted."""

    def __init__(self, alive: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        for t in alive:
            self.track(t)

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)  # storages keep their Python object for life, so id and finalizer follow the storage
        if key in self.live or t.device.type == "meta":
            return
        self.live[key] = storage.nbytes()
        self.current += self.live[key]
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self.free, key)

    def free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def onednn_linear_flops(x_shape, weight_shape, *_, **__) -> int:
    return 2 * math.prod(x_shape) * weight_shape[0]  # x (…, in) · weightᵀ (in, out)


# FlopCounterMode knows the GPU attention kernels; the CPU flash kernel is counted with the same formulas, and
# oneDNN's linear (fpt.performance.ops' frozen path) as the matmul it is.
CPU_FLOPS = {
    torch.ops.mkldnn._linear_pointwise: onednn_linear_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)
    ),
}


def measure_step(row: Row, device: torch.device) -> tuple[int, int | None]:
    """(FLOPs of one step, peak bytes over it on the CPU) from one untimed eager step after the first."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_FLOPS)
    if device.type == "cuda":
        with counter:
            row.step()
        return counter.get_total_flops(), None
    with TensorBytes(row.holds()) as memory, counter:
        row.step()
    return counter.get_total_flops(), memory.peak


def matmul_rows(device: torch.device, dtype: torch.dtype, n: int | None = None) -> tuple[dict[str, Row], int, int]:
    """A dense n × n matmul (default n: 2048 on a CPU, 8192 on a GPU) through each kernel a step can use (torch's
    matmul; on a CPU with oneDNN also oneDNN's, which fpt's frozen layers use): (rows by kernel, n, FLOPs)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    rows = {"torch.matmul": Row(lambda: a @ b, lambda: [a, b], 0)}
    if device.type == "cpu" and dtype == torch.float32 and ops.ONEDNN:
        rows["oneDNN linear"] = Row(lambda: ops.onednn_linear(a, b), lambda: [a, b], 0)
    return rows, n, 2 * n**3


def timed(step: Callable[[], Any], times: int, device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    for _ in range(times):
        step()
    sync(device)
    return (time.perf_counter() - started) / times


def run_interleaved(
    rows: dict[str, Row], warmup: int, repeats: int, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Warm every row up, then time repeats round-robin (A, B, C, A, B, C, ...): seconds per step, and (on a GPU)
    each row's peak of torch.cuda.max_memory_allocated over its timed steps."""
    inner, peaks = {}, {name: 0 for name in rows}
    for name, row in rows.items():
        for _ in range(max(warmup - 1, 0)):
            row.step()
        inner[name] = max(1, math.ceil(MIN_TIMED_SECONDS / timed(row.step, 1, device)))  # the last warm-up step
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, row in rows.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds[name].append(timed(row.step, inner[name], device))
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device))
    return seconds, peaks
