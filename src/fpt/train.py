"""The one training loop: seeded, validated on the full val split, best-on-validation, early stopping."""

from __future__ import annotations

import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from fpt import freeze
from fpt.backbones.base import loading_bars
from fpt.cache import reservoir
from fpt.config import TrainConfig
from fpt.distributed import Group, join, launched, leave, parallel
from fpt.errors import FPTError
from fpt.registry import MODELS
from fpt.results import environment, write_atomic, write_json, write_jsonl
from fpt.shipping.checkpoint import BatchStream, Checkpointer, Progress
from fpt.shipping.patch import TRAINED_FILE, write_trained
from fpt.tasks import Task, TaskSpec, collate, get_task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FPTError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FPTError(f"device {name!r} asked for, but torch sees no CUDA device here; use --device cpu")
    return device


def build_model(cfg: TrainConfig, task: Task | TaskSpec) -> nn.Module:
    """The model `cfg.model` builds for `task` (or a bare task spec; FPT by default), with requires_grad set by
    `cfg.train`, seeded by `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    model = MODELS.build(cfg.model, cfg=cfg, spec=task.spec if isinstance(task, Task) else task)
    freeze.apply(model, freeze.parse_groups(cfg.train))
    return model


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits (B, K, C), labels (B, K) → mean cross-entropy over every prediction."""
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    split: Dataset,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    group: Group | None = None,
) -> dict[str, float]:
    """Accuracy (over every prediction: per bit for the bit tasks) and loss on a whole split. Sums stay on the device
    until the split is done: one sync per evaluation, not per batch. In a data-parallel run each process evaluates
    its share of the split and the sums are added up."""
    group = group or Group()
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct predictions, predictions
    shard = Subset(split, group.shard(len(split))) if group.world > 1 else split
    for x, mask, y in DataLoader(shard, batch_size=batch_size, collate_fn=collate):
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        with autocast(precision, device):
            logits = model(x, mask)  # (B, K, C)
        sums[0] += nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        sums[1] += (logits.argmax(-1) == y).sum()
        sums[2] += y.numel()
    model.train(was_training)
    loss, correct, total = group.sum(sums).tolist()
    return {"accuracy": correct / total, "loss": loss / total}


def lr_lambda(cfg: TrainConfig, steps: int):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            progress = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = freeze.optimizer_groups(model, freeze.parse_groups(cfg.train), cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    device = next(model.parameters()).device
    # The fused kernel updates every trained tensor in one pass instead of ~10 small ops per tensor per step.
    return cls(groups, lr=cfg.lr, fused=device.type in ("cpu", "cuda"))


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast for precision "bf16" (weights, gradients and optimizer state stay fp32); a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def deterministic() -> None:
    """Deterministic kernels where PyTorch has them (a warning where it has none), as `fpt train` and `fpt bench` run,
    without the NaN fill of every fresh tensor that use_deterministic_algorithms switches on with them: fpt writes
    each buffer it allocates before reading it, and the fill is a pass over memory per allocation (about 5% of a
    CPU training step)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


class Stepper:
    """One optimisation step, as the training loop (and `fpt bench`) runs it. It returns the loss detached, on the
    device: the loop reads losses back once per validation, so a GPU never waits on the host between steps.
    In a data-parallel run (`world` processes, `global_batch` rows per step over all of them) the loss is this rank's
    share of the global batch's mean loss, times `world`: DDP's gradient average is then the global batch's."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        device: torch.device,
        world: int = 1,
        global_batch: int = 0,
    ) -> None:
        self.cfg, self.model, self.optimizer, self.scheduler, self.device = cfg, model, optimizer, scheduler, device
        self.world, self.global_batch = world, global_batch
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.cfg.precision, self.device):
            loss = loss_fn(self.model(x, mask), y)
            if self.world > 1:
                loss = loss * (y.shape[0] * self.world / self.global_batch)
        loss.backward()
        if self.cfg.clip:
            nn.utils.clip_grad_norm_(self.trainable, self.cfg.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)  # gradients are not held between steps (nor through a forward)
        return loss.detach()


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    quiet: bool = False,
    task: Task | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one FPT run and return its result record; with `out`, also write result.json, curve.jsonl, config.yaml
    and trained.safetensors there (atomically, only once the run has finished), and a checkpoint at each validation.
    `resume` continues the killed run in `out` from its checkpoint and ends with the numbers of an unbroken run."""
    if resume and out is None:
        raise FPTError("resuming a run needs its folder: give out (--out DIR)")
    group = launched()  # several processes under torchrun / accelerate launch: data parallel (fpt.distributed)
    device, started = join(group, resolve_device(cfg.device))
    try:
        return run(cfg, out, quiet, task, resume, group, device)
    finally:
        leave(started)


def run(
    cfg: TrainConfig,
    out: str | Path | None,
    quiet: bool,
    task: Task | None,
    resume: bool,
    group: Group,
    device: torch.device,
) -> dict[str, Any]:
    """fpt.train's loop, in this process of `group`."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    deterministic()
    task = task or get_task(cfg.task, **cfg.task_args)
    spec = task.spec
    steps = cfg.steps or spec.default_steps
    eval_every = min(cfg.eval_every or spec.default_eval_every, steps)
    with loading_bars(not quiet):  # --quiet: no weight-loading or conversion bars either
        model = build_model(cfg, task).to(device)
    model.train()
    counts = freeze.count(model)
    if cfg.cache_features:  # the reservoir: frozen features once per example, then the head alone trains on them
        task, model = reservoir(model, task, cfg.eval_batch_size, device)
    if cfg.compile:
        model.compile()  # compiles the forward in place: parameter names, groups and saved files are unchanged
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    groups = freeze.parse_groups(cfg.train)
    batches = BatchStream(task.splits["train"], cfg.batch_size, cfg.seed, device.type == "cuda", group)
    if batches.global_size < group.world:
        raise FPTError(f"a batch of {batches.global_size} cannot be split over {group.world} processes")
    if group.world > 1:
        torch.manual_seed(cfg.seed * 1_000_003 + group.rank)  # each process its own dropout masks
    net = parallel(model, group, device)  # DDP over the processes; the model itself in one
    step_once = Stepper(cfg, net, optimizer, scheduler, device, group.world, batches.global_size)
    resolved = cfg.model_copy(update={"steps": steps, "eval_every": eval_every})
    checkpoints = (
        Checkpointer(out, resolved, model, groups, optimizer, scheduler, batches, group) if out is not None else None
    )

    best = {"step": 0, "accuracy": -1.0, "loss": math.inf}
    best_state = freeze.trained_state(model, groups)
    curve: list[dict[str, Any]] = []
    since_best, best_accuracy = 0, -1.0
    samples, train_seconds = 0, 0.0
    step = 0
    start = checkpoints.load() if resume and checkpoints is not None else None
    if start is not None:
        step, best, best_state, curve = start.step, start.best, start.best_state, start.curve
        since_best, best_accuracy = start.since_best, start.best_accuracy
        samples, train_seconds = start.samples, start.train_seconds
    first = step + 1
    last = step if start is not None and start.stopped else steps  # a run that had early-stopped stays stopped
    bar = tqdm(
        total=steps,
        initial=step,
        desc=f"{cfg.task} {cfg.backbone}/{cfg.init}",
        disable=quiet or not group.main,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    window: list[torch.Tensor] = []  # this validation window's losses, left on the device until it ends
    window_started = time.perf_counter()
    for step in range(first, last + 1):
        x, mask, y = (t.to(device, non_blocking=True) for t in next(batches))
        window.append(step_once(x, mask, y))
        samples += batches.global_size
        bar.update()
        if step % eval_every and step != steps:
            continue
        losses = (group.sum(torch.stack(window)) / group.world).tolist()  # the window's one host-device sync
        train_seconds += time.perf_counter() - window_started
        window = []
        bad = next((i for i, value in enumerate(losses) if not math.isfinite(value)), None)
        if bad is not None:
            bar.close()
            raise FPTError(
                f"training loss became {losses[bad]} at step {step - len(losses) + 1 + bad} (lr {cfg.lr}); lower "
                f"--lr, or check the task's inputs for nan/inf"
            )
        val = evaluate(model, task.splits["val"], cfg.eval_batch_size, device, cfg.precision, group)
        row = {
            "step": step,
            "train_loss": sum(losses) / len(losses),
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "lr": scheduler.get_last_lr()[0],
            "train_seconds": round(train_seconds, 3),
        }
        curve.append(row)
        # The checkpoint kept is the best on validation (accuracy, then loss); patience counts validations
        # without a better accuracy, so a run whose accuracy has plateaued stops even while its loss still falls.
        if val["accuracy"] > best_accuracy:
            best_accuracy, since_best = val["accuracy"], 0
        else:
            since_best += 1
        if (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"]):
            best = {"step": step, **val}
            best_state = freeze.trained_state(model, groups)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_acc=f"{val['accuracy']:.4f}")
        if quiet and group.main:
            print(
                f"{cfg.task} {cfg.backbone}/{cfg.init} seed {cfg.seed} step {step}/{steps} "
                f"loss {row['train_loss']:.4f} val_acc {val['accuracy']:.4f}",
                file=sys.stderr,
            )
        stop = cfg.patience is not None and since_best >= cfg.patience
        if checkpoints is not None:
            checkpoints.save(
                Progress(step, best, best_state, curve, since_best, best_accuracy, samples, train_seconds, stop)
            )
        if stop:
            break
        window_started = time.perf_counter()
    bar.close()

    load_trained(model, best_state)
    test = evaluate(model, task.splits["test"], cfg.eval_batch_size, device, cfg.precision, group)
    result = {
        "task": cfg.task,
        "model": cfg.model,
        "backbone": cfg.backbone,
        "init": cfg.init,
        "train_groups": list(groups),
        **counts,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "steps": steps,
        "steps_run": step,
        "best_step": best["step"],
        "stopped_early": step < steps,
        "val_accuracy": best["accuracy"],
        "val_loss": best["loss"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples / max(train_seconds, 1e-9), 2),
        "processes": group.world,
        "task_spec": spec.to_dict(),
        "task_info": task.info,
        "backbone_source": getattr(getattr(model, "backbone", None), "source", None),
        "config": resolved.model_dump(),
        "environment": environment(device),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if out is not None and group.main:
        out = Path(out)
        write_trained(out / TRAINED_FILE, model, groups, resolved, spec)
        write_jsonl(out / "curve.jsonl", curve)
        write_atomic(out / "config.yaml", yaml.safe_dump(resolved.model_dump(), sort_keys=False))
        write_json(out / "result.json", result)
        if checkpoints is not None:
            checkpoints.remove()  # the run is finished: result.json marks it
    return result


def load_trained(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a trained-groups state (fpt.freeze.trained_state) back into the model; every name must exist."""
    own = dict(model.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise FPTError(f"state has parameters the model lacks: {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)
