"""`fpt bench`: what a frozen backbone saves, measured side by side in one run.

Rows, on the same backbone, shapes and batch:
  fpt        fpt's FPT training step (fpt.train.Stepper, the loop's own step)
  reference  the step a user would write (fpt.performance.reference, BERT and Llama families): transformers'
             AutoModel with its default attention (SDPA), requires_grad=False by parameter name (all but the norms
             and position embeddings), a linear input layer and head, plain Adam; reference-eager the same with
             eager attention, reference-compiled the SDPA one under torch.compile (where it compiles). fpt's speed
             target is read against the fastest of them.
  fpt-no-X   fpt's step with its hand-written CPU path X (dropout, attention, onednn, chunking) switched off, and
             fpt-plain with all of them off: what each path buys on this machine; fpt-all with every path on, where
             this CPU's default leaves one off (ops.default_paths)
  full       full fine-tuning of fpt's model (train: all)
  reservoir  output-only training on cached frozen features (train: output, cache_features)
  inference  evaluation: fpt's forward under torch.inference_mode
  fpt-bf16   fpt's step under bf16 autocast (weights and optimizer state stay fp32), beside the fp32 one: what
             `--precision bf16` buys on this machine (skipped when the bench itself runs in bf16)
  matmul     a dense square matmul through each kernel the steps use: the faster one is the device's measured
             peak, the denominator of MFU (fpt-bf16's MFU is read against the same matmul in bf16, timed beside it;
             a CPU without bf16 instructions only emulates that matmul, so there it is not timed and fpt-bf16 has
             no MFU)

Each row is warmed up, then the rows' repeats are interleaved round-robin, so load from other processes falls on
every row alike; a row's step time is the median of its repeats. FLOPs are counted (torch.utils.flop_counter) on one
eager step; peak memory is torch.cuda.max_memory_allocated on a GPU, and on the CPU the high-water mark of the bytes of
live tensor storages over one step (parameters, gradients, optimizer state, activations and temporaries; see
fpt.performance.measure.TensorBytes). The batch is fixed and already on the device: the rows time the step, not
data loading.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from statistics import median
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from fpt.backbones.base import loading_bars
from fpt.cache import HeadOnly
from fpt.config import TrainConfig, make_config
from fpt.errors import FPTError
from fpt.freeze import count
from fpt.performance import ops
from fpt.performance.measure import (
    Row,
    matmul_rows,
    measure_step,
    module_tensors,
    optimizer_tensors,
    run_interleaved,
    sync,
)
from fpt.performance.reference import Reference
from fpt.placement import emulates_bf16
from fpt.results import cpu_shares, cpu_ticks, environment
from fpt.tasks import TaskSpec, get_task
from fpt.train import Stepper, autocast, build_model, deterministic, loss_fn, make_optimizer, resolve_device

REFERENCES = ("reference", "reference-eager", "reference-compiled")
ABLATIONS = tuple(f"fpt-no-{path}" for path in ops.PATHS) + ("fpt-plain", "fpt-all")
ROWS = ("fpt", *REFERENCES, "full", "reservoir", "inference", "fpt-bf16", *ABLATIONS)
FORMAT = "fpt-bench/1"
TARGETS = {  # name → (what, comparison, bound)
    "fpt_vs_reference_speed": ("fpt samples/s ÷ the fastest reference's samples/s (CPU)", ">=", 1.3),
    "same_loss": ("fpt loss − reference loss on the same batch, relative", "<=", None),
    "fpt_vs_full_time": ("fpt step time ÷ full fine-tuning step time", "<=", 0.75),
    "fpt_vs_full_memory": ("fpt peak memory ÷ full fine-tuning peak memory", "<=", 0.6),
    "reservoir_vs_fpt_epoch": ("reservoir samples/s ÷ fpt samples/s (epoch speed-up)", ">=", 100.0),
    "fpt_mfu_gpu": ("fpt MFU on a GPU at batch × tokens ≥ 16k", ">=", 0.35),
}


@dataclass(frozen=True)
class Shape:
    """A benchmark shape: `batch` sequences of `tokens` tokens. Names starting with "bit-memory" take the bit-memory
    task's token layout (50 features per token, the last 20 tokens read, 50 two-way predictions each); other names a
    long-sequence classification layout like cifar10-lra's (1 feature per token, the last token read, 10 classes)."""

    name: str
    batch: int
    tokens: int

    def spec(self) -> TaskSpec:
        if self.name.startswith("bit-memory"):
            memory = get_task("bit-memory", train_size=1, val_size=1, test_size=1).spec
            return TaskSpec(
                self.name,
                "bits",
                "features",
                input_dim=memory.input_dim,
                num_classes=memory.num_classes,
                max_tokens=self.tokens,
                num_outputs=min(memory.num_outputs, self.tokens),
                predictions_per_token=memory.predictions_per_token,
            )
        return TaskSpec(self.name, "sequence", "features", input_dim=1, num_classes=10, max_tokens=self.tokens)


def parse_shape(text: str) -> Shape:
    """ "bit-memory=32x120" → Shape("bit-memory", 32, 120)."""
    try:
        name, size = text.split("=")
        batch, tokens = (int(n) for n in size.lower().split("x"))
    except ValueError:
        raise FPTError(f"--shape {text!r}: expected NAME=BATCHxTOKENS, e.g. bit-memory=32x120") from None
    if not name or batch <= 0 or tokens <= 0:
        raise FPTError(f"--shape {text!r}: expected a name and positive batch and token counts")
    return Shape(name, batch, tokens)


class BenchSettings(BaseModel):
    """What `fpt bench` measures and how (the options of `fpt bench`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = Field("minilm", description="backbone name")
    backbone_path: str | None = Field(
        None, description="local folder for hub backbones", json_schema_extra={"metavar": "DIR"}
    )
    shapes: list[Shape] | None = Field(
        None,
        description="a shape (repeat); names starting bit-memory use that task's token layout, others a 1-feature, "
        "10-class layout; default: bit-memory=32x120 and long=8x512 on a CPU (GPU: 256x120, 32x512; long = 1024 "
        "tokens or the backbone's position limit)",
        json_schema_extra={"flag": "--shape", "metavar": "NAME=BATCHxTOKENS"},
    )
    rows: str = Field(",".join(ROWS), description="comma list of rows")
    repeats: int | None = Field(None, gt=0, description="timed repeats per row (default 5 on a CPU, 20 on a GPU)")
    warmup: int = Field(2, ge=0, description="untimed steps per row first")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="fp32, or bf16 autocast; auto: bf16 on a GPU, fp32 on a CPU"
    )
    compile: bool = Field(False, description="torch.compile fpt's rows (not the reference)")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch")
    seed: int = Field(0, ge=0, description="seed for the models' initialisation and the batch")
    matmul: int | None = Field(
        None,
        gt=0,
        description="n of the dense n × n matmul timed beside the rows, the peak MFU is read against (default 2048 on "
        "a CPU, 8192 on a GPU)",
        json_schema_extra={"metavar": "N"},
    )

    @field_validator("shapes", mode="before")
    @classmethod
    def _parse_shapes(cls, shapes: Any) -> Any:
        shapes = [shapes] if isinstance(shapes, str) else shapes
        try:
            return [parse_shape(s) if isinstance(s, str) else s for s in shapes] if shapes is not None else None
        except FPTError as err:  # "--shape 'x': expected ..." → "expected ..." (the error names the option)
            raise ValueError(str(err).partition(": ")[2]) from None

    @field_validator("rows")
    @classmethod
    def _known_rows(cls, rows: str) -> str:
        names = [r.strip() for r in rows.split(",") if r.strip()]
        unknown = [r for r in names if r not in ROWS]
        if unknown or not names:
            raise ValueError(f"unknown bench row {unknown[0] if unknown else ''!r}; choose from {', '.join(ROWS)}")
        return ",".join(r for r in ROWS if r in names)


def default_shapes(device: torch.device, max_positions: int | None) -> list[Shape]:
    """bit-memory's real 120 tokens, and a long sequence: 1024 tokens, or the backbone's position limit if shorter
    (minilm: 512). Batches: 32 and 8 on a CPU; on a GPU 256 and 32 (batch × tokens ≥ 16k)."""
    tokens = get_task("bit-memory", train_size=1, val_size=1, test_size=1).spec.max_tokens
    long = min(1024, max_positions or 1024)
    gpu = device.type == "cuda"
    return [Shape("bit-memory", 256 if gpu else 32, tokens), Shape("long", (16384 // long) if gpu else 8, long)]


def fixed_batch(spec: TaskSpec, batch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    """A batch with bit-memory-like inputs (±1 and 0) and random labels, the same for every row."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 3, (batch, spec.max_tokens, spec.input_dim), generator=g) - 1).float()
    y = torch.randint(0, spec.num_classes, (batch, spec.num_outputs * spec.predictions_per_token), generator=g)
    mask = torch.ones(batch, spec.max_tokens, dtype=torch.bool)
    return x.to(device), mask.to(device), y.to(device)


def train_row(
    cfg: TrainConfig,
    model: nn.Module,
    batch: tuple[torch.Tensor, ...],
    device: torch.device,
    paths: frozenset[str] | None = None,
) -> Row:
    """fpt's training step (fpt.train.Stepper) as a row; with `paths`, only those hand-written CPU paths in use."""
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    step = Stepper(cfg, model, optimizer, scheduler, device)

    def run() -> torch.Tensor:
        if paths is None:
            return step(*batch)
        with ops.fast_paths(*paths):
            return step(*batch)

    return Row(
        run,
        lambda: [*module_tensors(model), *optimizer_tensors(optimizer)],
        count(model)["trainable_params"],
        model=model,
    )


def build_rows(
    names: list[str], cfg: TrainConfig, spec: TaskSpec, batch: tuple[torch.Tensor, ...], device: torch.device
) -> tuple[dict[str, Row], dict[str, Any] | None]:
    """The rows for one shape, and the same-loss check of fpt against the reference (None without both)."""
    x, mask, y = batch
    rows: dict[str, Row] = {}
    skipped: dict[str, str] = {}
    fpt_model = build_model(cfg, spec).to(device).train()
    if "fpt" in names:
        rows["fpt"] = train_row(cfg, fpt_model, batch, device)
    for name in [n for n in ABLATIONS if n in names]:
        if name == "fpt-all":
            paths, note = frozenset(ops.PATHS), "every hand-written path on"
        else:
            off = set(ops.PATHS) if name == "fpt-plain" else {name.removeprefix("fpt-no-")}
            paths, note = ops.enabled - off, f"hand-written paths off: {', '.join(sorted(off))}"
        if paths == ops.enabled:  # a path already off by default here, or every path on where all are by default
            skipped[name] = f"the same paths as fpt's step here ({', '.join(sorted(ops.enabled)) or 'none'})"
            continue
        rows[name] = train_row(cfg, build_model(cfg, spec).to(device).train(), batch, device, paths)
        rows[name].note = note
    check = None
    for name in [n for n in REFERENCES if n in names]:
        row = reference_row(name, fpt_model, cfg, spec, batch, device)
        if isinstance(row, str):
            skipped[name] = row
            continue
        rows[name] = row
        if name == "reference":
            check = same_loss(fpt_model, row.model, batch, cfg.precision, device)
    if "full" in names:
        full = make_config({**cfg.model_dump(), "train": "all"})
        model = build_model(full, spec).to(device).train()
        rows["full"] = train_row(full, model, batch, device)
    if "reservoir" in names:
        head_cfg = make_config({**cfg.model_dump(), "train": "output", "cache_features": True, "compile": False})
        model = build_model(head_cfg, spec).to(device).eval()
        started = time.perf_counter()
        with torch.no_grad(), autocast(cfg.precision, device):
            features = model.forward_features(x, mask).float()  # (B, k, D): the cache, built once
        sync(device)
        cache_seconds = time.perf_counter() - started
        row = train_row(head_cfg, HeadOnly(model).train(), (features, mask, y), device)
        row.note, row.model = f"cache built in {cache_seconds * 1e3:.0f} ms for the batch", None
        rows["reservoir"] = row
    if "inference" in names:
        model = build_model(cfg, spec).to(device).eval()

        def infer() -> torch.Tensor:
            with torch.inference_mode(), autocast(cfg.precision, device):
                return model(x, mask)

        rows["inference"] = Row(infer, lambda: module_tensors(model), 0, "torch.inference_mode, eval mode", model)
    if "fpt-bf16" in names:
        if cfg.precision == "bf16":
            skipped["fpt-bf16"] = "fpt's own row already runs under bf16 autocast"
        else:
            half = make_config({**cfg.model_dump(), "precision": "bf16"})
            rows["fpt-bf16"] = train_row(half, build_model(half, spec).to(device).train(), batch, device)
            rows["fpt-bf16"].note = "bf16 autocast; weights, gradients and optimizer state fp32"
    return rows, check, skipped


def reference_row(
    name: str,
    fpt_model: nn.Module,
    cfg: TrainConfig,
    spec: TaskSpec,
    batch: tuple[torch.Tensor, ...],
    device: torch.device,
) -> Row | str:
    """A reference row on fpt's initial input layer and head: SDPA attention (transformers' default), eager, or SDPA
    under torch.compile; for a compiled one that does not compile here, the reason instead."""
    x, _, y = batch
    torch.manual_seed(cfg.seed)
    attention = "eager" if name == "reference-eager" else "sdpa"
    reference = Reference(fpt_model.backbone, spec, cfg.dropout, attention).to(device).train()
    reference.input_layer.load_state_dict(fpt_model.input_layer.state_dict())  # the same initial weights
    reference.head.load_state_dict(fpt_model.head.state_dict())
    optimizer = torch.optim.Adam([p for p in reference.parameters() if p.requires_grad], lr=cfg.lr)
    forward = torch.compile(reference) if name == "reference-compiled" else reference

    def reference_step() -> torch.Tensor:
        with autocast(cfg.precision, device):
            loss = nn.functional.cross_entropy(forward(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    what = {"reference": "SDPA attention (transformers' default)", "reference-eager": "eager attention",
            "reference-compiled": "SDPA attention under torch.compile"}[name]  # fmt: skip
    row = Row(
        reference_step,
        lambda: [*module_tensors(reference), *optimizer_tensors(optimizer)],
        count(reference)["trainable_params"],
        f"transformers AutoModel, {what}, frozen by name, plain Adam",
        reference,
    )
    if name == "reference-compiled":
        try:
            row.step()  # compiles now, or says why it cannot
        except Exception as err:  # inductor needs a C++ compiler and a supported platform  # noqa: BLE001
            return f"torch.compile failed here: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return row


def same_loss(
    fpt_model: nn.Module, reference: Reference, batch: tuple[torch.Tensor, ...], precision: str, device: torch.device
) -> dict[str, Any]:
    """Loss and input-layer gradient of fpt and the reference on the same batch, same weights, dropout off."""
    x, mask, y = batch
    out: dict[str, Any] = {}
    grads = []
    for name, model, forward in (
        ("fpt", fpt_model, lambda: fpt_model(x, mask)),
        ("reference", reference, lambda: reference(x)),
    ):
        model.eval()
        with autocast(precision, device):
            loss = loss_fn(forward(), y)
        loss.backward()
        grads.append(model.input_layer.weight.grad.detach().clone())
        model.zero_grad(set_to_none=True)
        model.train()
        out[f"{name}_loss"] = loss.item()
    out["loss_difference"] = abs(out["fpt_loss"] - out["reference_loss"])
    out["relative_difference"] = out["loss_difference"] / max(1.0, abs(out["reference_loss"]))
    out["input_grad_relative_difference"] = ((grads[0] - grads[1]).abs().max() / grads[1].abs().max()).item()
    out["tolerance"] = 2e-2 if precision == "bf16" else 1e-4
    out["same"] = out["relative_difference"] <= out["tolerance"] and out["input_grad_relative_difference"] <= (
        10 * out["tolerance"]
    )
    return out


def bench_shape(
    shape: Shape,
    names: list[str],
    cfg: TrainConfig,
    warmup: int,
    repeats: int,
    device: torch.device,
    seed: int,
    matmul: int | None = None,
) -> dict[str, Any]:
    spec = shape.spec()
    batch = fixed_batch(spec, shape.batch, device, seed)
    rows, check, skipped = build_rows(names, cfg, spec, batch, device)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    matmuls, n, matmul_flops = matmul_rows(device, dtype, matmul)
    half_matmuls = {}
    # bf16 has its own peak: the bf16 row's MFU is read against it, not against fp32's. A CPU without bf16
    # instructions emulates it: that matmul is no peak (and takes minutes a repeat), so it is not timed there
    if "fpt-bf16" in rows and not emulates_bf16(device):
        half, _, _ = matmul_rows(device, torch.bfloat16, matmul)
        half_matmuls = {f"{name} bf16": row for name, row in half.items()}
    for row in rows.values():
        row.step()  # the optimizer's state exists from the first step on: measure a step like every later one
    counted = {name: measure_step(row, device) for name, row in rows.items()}
    for name, row in rows.items():
        if cfg.compile and row.model is not None and name not in REFERENCES:
            row.model.compile()  # after counting: FLOPs and CPU memory are those of the eager step
    seconds, cuda_peaks = run_interleaved({**rows, **matmuls, **half_matmuls}, warmup, repeats, device)
    peak = {"matmul": matmul_peak({k: seconds[k] for k in matmuls}, n, matmul_flops, dtype)}
    if half_matmuls:
        times = {k.removesuffix(" bf16"): seconds[k] for k in half_matmuls}
        peak["matmul_bf16"] = matmul_peak(times, n, matmul_flops, torch.bfloat16)
    out_rows = {}
    for name, row in sorted(rows.items(), key=lambda item: ROWS.index(item[0])):
        step = median(seconds[name])
        flops, cpu_peak = counted[name]
        peak_row = peak.get("matmul_bf16") if name == "fpt-bf16" else peak["matmul"]
        out_rows[name] = {
            "step_seconds": step,
            "step_seconds_all": seconds[name],
            "samples_per_second": shape.batch / step,
            "tokens_per_second": shape.batch * shape.tokens / step,
            "peak_bytes": cuda_peaks[name] if device.type == "cuda" else cpu_peak,
            "flops_per_step": flops,
            "flops_per_second": flops / step,
            "mfu": None if peak_row is None else flops / step / peak_row["flops_per_second"],
            "trainable_params": row.trainable_params,
            "note": row.note,
        }
    return {
        **asdict(shape),
        "spec": spec.to_dict(),
        **peak,
        "rows": out_rows,
        "skipped": skipped,
        "same_loss": check,
        "ratios": ratios(out_rows),
    }


def matmul_peak(seconds: dict[str, list[float]], n: int, flops: int, dtype: torch.dtype) -> dict[str, Any]:
    """The device's measured peak in `dtype`: the fastest kernel's median FLOP/s over its timed matmuls."""
    kernel = min(seconds, key=lambda k: median(seconds[k]))
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "kernel": kernel,
        "step_seconds_all": seconds[kernel],
        "flops_per_second": flops / median(seconds[kernel]),
        "flops_per_second_best": flops / min(seconds[kernel]),
        "flops_per_second_by_kernel": {k: flops / median(t) for k, t in seconds.items()},
    }


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    out = {}
    references = [name for name in REFERENCES if name in rows]
    if "fpt" in rows and references:
        best = max(references, key=lambda name: rows[name]["samples_per_second"])
        out["fpt_vs_reference_speed"] = rows["fpt"]["samples_per_second"] / rows[best]["samples_per_second"]
        for name in references:
            key = "fpt_vs_" + name.replace("-", "_") + ("_sdpa" if name == "reference" else "") + "_speed"
            out[key] = rows["fpt"]["samples_per_second"] / rows[name]["samples_per_second"]
    for name in [n for n in ABLATIONS if n in rows and "fpt" in rows]:  # > 1: the path(s) switched off paid
        out[name.replace("-", "_") + "_time"] = rows[name]["step_seconds"] / rows["fpt"]["step_seconds"]
    if "fpt" in rows and "full" in rows:
        out["fpt_vs_full_time"] = rows["fpt"]["step_seconds"] / rows["full"]["step_seconds"]
        out["fpt_vs_full_memory"] = rows["fpt"]["peak_bytes"] / rows["full"]["peak_bytes"]
    if "fpt" in rows and "reservoir" in rows:
        out["reservoir_vs_fpt_epoch"] = rows["reservoir"]["samples_per_second"] / rows["fpt"]["samples_per_second"]
    if "fpt" in rows and "fpt-bf16" in rows:
        out["bf16_vs_fpt_speed"] = rows["fpt-bf16"]["samples_per_second"] / rows["fpt"]["samples_per_second"]
    if "fpt" in rows and "inference" in rows:
        out["inference_vs_fpt_speed"] = rows["inference"]["samples_per_second"] / rows["fpt"]["samples_per_second"]
    return out


def check_targets(shapes: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """Each target that applies, per shape, with its measured value and whether it is met."""
    out = []
    for shape in shapes:
        values = dict(shape["ratios"])
        if shape["same_loss"] is not None:
            values["same_loss"] = shape["same_loss"]["relative_difference"]
        if device.type != "cpu":
            values.pop("fpt_vs_reference_speed", None)
        if device.type == "cuda" and "fpt" in shape["rows"] and shape["batch"] * shape["tokens"] >= 16384:
            values["fpt_mfu_gpu"] = shape["rows"]["fpt"]["mfu"]
        for name, (what, op, bound) in TARGETS.items():
            if name not in values:
                continue
            if name == "same_loss":
                bound, met = shape["same_loss"]["tolerance"], shape["same_loss"]["same"]
            else:
                met = values[name] >= bound if op == ">=" else values[name] <= bound
            out.append(
                {"target": name, "what": what, "shape": shape["name"], "value": values[name], "op": op, "bound": bound,
                 "met": met}
            )  # fmt: skip
    return out


def run_bench(settings: BenchSettings | None = None, command: str | None = None) -> dict[str, Any]:
    """Run the benchmark and return its record (what `fpt bench --json` writes); `command` is recorded as the
    command line that ran it."""
    settings = settings or BenchSettings()
    names, shapes, warmup, seed = settings.rows.split(","), settings.shapes, settings.warmup, settings.seed
    if settings.threads:
        torch.set_num_threads(settings.threads)
    deterministic()  # as fpt train runs
    dev = resolve_device(settings.device)
    precision = "bf16" if settings.dtype == "bf16" or (settings.dtype == "auto" and dev.type == "cuda") else "fp32"
    repeats = settings.repeats or (20 if dev.type == "cuda" else 5)
    cfg = make_config(
        {"backbone": settings.backbone, "backbone_path": settings.backbone_path, "precision": precision,
         "compile": settings.compile, "seed": seed}
    )  # fmt: skip
    if shapes is None:
        with loading_bars(False):
            probe = build_model(cfg, Shape("bit-memory", 1, 1).spec())
        shapes = default_shapes(dev, probe.backbone.max_positions)
        del probe
    started, load_before, ticks_before = time.perf_counter(), os.getloadavg(), cpu_ticks()
    with loading_bars(False):  # a weight-loading bar per row would interleave with the table
        results = [bench_shape(s, names, cfg, warmup, repeats, dev, seed, settings.matmul) for s in shapes]
    return {
        "format": FORMAT,
        "command": command or "fpt bench",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "cpu_time": cpu_shares(ticks_before, cpu_ticks()),  # busy and stolen shares of the machine over the run
        "settings": {
            "backbone": settings.backbone,
            "backbone_path": settings.backbone_path,
            "device": str(dev),
            "precision": precision,
            "compile": settings.compile,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "warmup": warmup,
            "seed": seed,
            "rows": names,
            "fast_paths": sorted(ops.enabled),
            "dropout": cfg.dropout,
            "lr": cfg.lr,
        },
        "methods": {
            "time": "median of the repeats after warm-up; the rows' repeats interleaved round-robin",
            "memory": "torch.cuda.max_memory_allocated over the timed steps"
            if dev.type == "cuda"
            else "high-water mark of live tensor-storage bytes over one eager step (parameters, gradients, "
            "optimizer state, activations, temporaries), tracked by a TorchDispatchMode",
            "flops": "torch.utils.flop_counter.FlopCounterMode over one eager step (matmuls and attention)",
            "mfu": "achieved FLOP/s ÷ the median FLOP/s of the dense matmul row (the faster kernel where two are "
            "timed: torch.matmul and, on a CPU, oneDNN's), timed in the same rounds; none for fpt-bf16 on a CPU "
            "without bf16 instructions, whose emulated bf16 matmul is no peak and is not timed",
        },
        "environment": environment(dev),
        "shapes": results,
        "targets": check_targets(results, dev),
    }
