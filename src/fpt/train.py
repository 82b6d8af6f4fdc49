"""The one training loop: seeded, validated on the full val split, best-on-validation, early stopping."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from fpt import freeze
from fpt.backbones.base import loading_bars
from fpt.cache import reservoir
from fpt.config import TrainConfig
from fpt.distributed import Group, join, launched, leave, parallel
from fpt.errors import FPTError
from fpt.evaluate import Tracker, autocast, evaluate
from fpt.moved import MOVED_FILE, moved
from fpt.placement import check_precision, describe_bytes, set_threads
from fpt.registry import MODELS
from fpt.results import CURVE_FILE, environment, write_atomic, write_json, write_jsonl
from fpt.shipping.checkpoint import CHECKPOINT_FILE, BatchStream, Checkpointer, config_differences, saved_config
from fpt.shipping.patch import TRAINED_FILE, write_trained
from fpt.tasks import Task, TaskSpec, get_task
from fpt.unfreeze import Unfreezing


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
    """logits (B, K, C), labels (B, K) → mean cross-entropy over every prediction; for a regression task (float
    labels (B, K, 4), C = 1) the mean squared error against the normalised targets."""
    if labels.is_floating_point():
        return nn.functional.mse_loss(logits[..., 0], labels[..., 0])
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


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


def deterministic() -> None:
    """Deterministic kernels where PyTorch has them (a warning where it has none), as `fpt train` and `fpt bench` run,
    without the NaN fill of every fresh tensor that use_deterministic_algorithms switches on with them: fpt writes
    each buffer it allocates before reading it, and the fill is a pass over memory per allocation (about 5% of a
    CPU training step)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # not in torch's stubs


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
        if cfg.unfreeze and world > 1:
            raise FPTError("unfreeze changes which tensors train mid-run; run it in one process (DDP fixes them)")
        self.unfreezing = Unfreezing(model, cfg.unfreeze) if cfg.unfreeze else None

    def __call__(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # gradual unfreezing: which tensors train in this step (the scheduler counts the steps taken, resumed too)
        if self.unfreezing is not None and self.unfreezing.apply(self.scheduler.last_epoch + 1):
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]  # what the clip covers
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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train one FPT run and return its result record; with `out`, also write result.json, curve.jsonl, config.yaml
    and trained.safetensors there (atomically, only once the run has finished), and a checkpoint at each validation.
    `resume` continues the killed run in `out` from its checkpoint and ends with the numbers of an unbroken run. A
    folder that already holds a run is refused unless `resume` (continue it) or `overwrite` (replace it) is given."""
    if resume and out is None:
        raise FPTError("resuming a run needs its folder: give out (--out DIR)")
    if out is not None:
        check_out(Path(out), resume, overwrite)
        if resume:
            check_resumable(Path(out), cfg)
    if MODELS.resolve(cfg.model)[0].tags.get("fitted"):  # a classical baseline: fitted, not trained by gradient
        return fit_run(cfg, out, task)
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
    """fpt.train's loop, in this process of `group`: set-up, the steps with a validation every `eval_every`, then the
    test split on the best-on-validation weights and the run's files."""
    deterministic()
    task = task or get_task(cfg.task, **cfg.task_args)
    cfg = resolved(cfg, task.spec)
    steps, eval_every = budget(cfg)
    groups = freeze.parse_groups(cfg.train)
    metric = task.spec.metric
    with loading_bars(not quiet):  # --quiet: no weight-loading or conversion bars either
        model = build_model(cfg, task).to(device)
    model.train()
    counts, initial = freeze.count(model), freeze.trained_state(model, groups)  # initial: θ₀ of moved.json
    if out is not None:
        check_disk(Path(out), model, groups)
    set_threads(cfg.threads)  # --threads, else the cores other processes leave free (after any user error)
    check_precision(cfg.precision, device)
    if cfg.cache_features:  # the reservoir: frozen features once per example, then the head alone trains on them
        task, model = reservoir(model, task, cfg.eval_batch_size, device)
    if cfg.compile:
        model.compile()  # compiles the forward in place: parameter names, groups and saved files are unchanged
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    batches = BatchStream(task.splits["train"], cfg.batch_size, cfg.seed, device.type == "cuda", group)
    if batches.global_size < group.world:
        raise FPTError(f"a batch of {batches.global_size} cannot be split over {group.world} processes")
    if group.world > 1:
        torch.manual_seed(cfg.seed * 1_000_003 + group.rank)  # each process its own dropout masks
    net = parallel(model, group, device)  # DDP over the processes; the model itself in one
    step_once = Stepper(cfg, net, optimizer, scheduler, device, group.world, batches.global_size)
    checkpoints = None if out is None else Checkpointer(out, cfg, model, groups, optimizer, scheduler, batches, group)
    tracker = checkpoints.load() if resume and checkpoints is not None else None
    tracker = tracker or Tracker(best_state=freeze.trained_state(model, groups))
    last = tracker.step if tracker.stopped else steps  # a run that had early-stopped stays stopped
    with progress_bar(cfg, tracker.step, disable=quiet or not group.main) as bar:
        window: list[torch.Tensor] = []  # this validation window's losses, left on the device until it ends
        window_started = time.perf_counter()
        for step in range(tracker.step + 1, last + 1):
            x, mask, y = (t.to(device, non_blocking=True) for t in next(batches))
            window.append(step_once(x, mask, y))
            tracker.samples += batches.global_size
            bar.update()
            if step % eval_every and step != steps:
                continue
            losses = (group.sum(torch.stack(window)) / group.world).tolist()  # the window's one host-device sync
            tracker.train_seconds += time.perf_counter() - window_started
            check_finite(losses, step, cfg.lr)
            val = evaluate(model, task.splits["val"], cfg.eval_batch_size, device, cfg.precision, group, metric)
            row = tracker.update(step, losses, val, float(scheduler.get_last_lr()[0]), model, groups, cfg.patience)
            report(bar, cfg, row, quiet and group.main, metric)
            if checkpoints is not None:
                checkpoints.save(tracker)
            if tracker.stopped:
                break
            window, window_started = [], time.perf_counter()

    load_trained(model, tracker.best_state)
    test = evaluate(model, task.splits["test"], cfg.eval_batch_size, device, cfg.precision, group, metric)
    result = result_record(cfg, task, model, counts, tracker, test, group.world, device)
    if out is not None and group.main:
        write_run(Path(out), cfg, task.spec, model, tracker.curve, result, checkpoints, initial)
    return result


def fit_run(cfg: TrainConfig, out: str | Path | None, task: Task | None) -> dict[str, Any]:
    """A classical baseline's run (fpt.baselines.classical): fit on train, score validation and test, and write the
    same result.json, curve.jsonl (empty) and config.yaml as a trained run."""
    from fpt.baselines.classical import fit_and_score

    task = task or get_task(cfg.task, **cfg.task_args)
    cfg = resolved(cfg, task.spec)
    model = MODELS.build(cfg.model, cfg=cfg, spec=task.spec)
    val, test, seconds = fit_and_score(model, task, cfg.model)
    tracker = Tracker(best_state={}, best={"step": 0, **val}, train_seconds=seconds)
    counts = {"trainable_params": 0, "total_params": 0}
    result = result_record(cfg, task, nn.Module(), counts, tracker, test, 1, torch.device("cpu")) | {"fitted": True}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_record(Path(out), cfg, [], result)
    return result


def resolved(cfg: TrainConfig, spec: TaskSpec) -> TrainConfig:
    """`cfg` with the task's default budget filled in (steps, and a validation at least at the last step): as
    saved beside the results."""
    steps = cfg.steps or spec.default_steps
    return cfg.model_copy(update={"steps": steps, "eval_every": min(cfg.eval_every or spec.default_eval_every, steps)})


def budget(cfg: TrainConfig) -> tuple[int, int]:
    """A resolved config's steps and validation interval."""
    if cfg.steps is None or cfg.eval_every is None:
        raise ValueError("the config is not resolved (fpt.train.resolved): steps and eval_every are unset")
    return cfg.steps, cfg.eval_every


# what a run leaves in --out
RUN_FILES = (CHECKPOINT_FILE, "result.json", TRAINED_FILE, CURVE_FILE, "config.yaml", MOVED_FILE)


def nearest_existing(path: Path) -> Path:
    """`path`, or the closest of its parents that exists (where a new run folder would be made)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Before anything runs: `out` must be a folder (or not exist yet) that fpt can write, and hold no run unless the
    run is resumed or replaced (`overwrite` deletes the earlier run's files now, so none of them outlives it)."""
    if resume and overwrite:
        raise FPTError("give --resume (continue the run in --out) or --overwrite (replace it), not both")
    if out.exists() and not out.is_dir():
        raise FPTError(f"--out {out} is a file; give a folder for the run's files")
    existing = nearest_existing(out)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FPTError(f"--out {out}: cannot write in {existing} (permission denied)")
    held = [name for name in RUN_FILES[:2] if (out / name).is_file()]
    if held and not resume and not overwrite:
        raise FPTError(
            f"{out} already holds a run ({' and '.join(held)}); continue it with --resume, replace it with "
            f"--overwrite, or give another --out"
        )
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)


def check_resumable(out: Path, cfg: TrainConfig) -> None:
    """Before anything loads: the checkpoint in `out`, if any, is of this config (placement options aside)."""
    if (out / CHECKPOINT_FILE).is_file():
        saved = saved_config(out).model_dump()
        mine = cfg.model_dump()
        unresolved = {k: saved[k] for k in ("steps", "eval_every") if mine[k] is None}  # the task's defaults
        differences = config_differences(saved, {**mine, **unresolved})
        if differences:
            raise FPTError(f"cannot resume {out}: the config differs in {'; '.join(differences)}")


def check_disk(out: Path, model: nn.Module, groups: tuple[str, ...]) -> None:
    """Refuse to start a run whose checkpoint (trained tensors, their best copy and two optimizer moments, plus the
    patch-sized trained file) would not fit on the disk of `out`."""
    trained = sum(t.numel() * t.element_size() for t in freeze.trained_state(model, groups).values())
    need = 5 * trained + (1 << 20)  # and a megabyte of metadata, curves and results
    existing = nearest_existing(out)
    free = shutil.disk_usage(existing).free
    if need > free:
        raise FPTError(
            f"--out {out}: the run's files need about {describe_bytes(need)} and its disk has {describe_bytes(free)} "
            f"free"
        )


def progress_bar(cfg: TrainConfig, initial: int, disable: bool) -> tqdm:
    """The bar of the run's steps on stderr (none with --quiet, and none on a process other than the main one)."""
    desc = f"{cfg.task} {cfg.backbone}/{cfg.init}"
    return tqdm(total=cfg.steps, initial=initial, desc=desc, disable=disable, dynamic_ncols=True, file=sys.stderr)


def report(bar: tqdm, cfg: TrainConfig, row: dict[str, Any], line: bool, metric: str = "accuracy") -> None:
    """Show a validation's row of the curve on the bar, and with `line` (--quiet: no bar) as a line on stderr."""
    shown = "val_acc" if metric == "accuracy" else f"val_{metric}"
    bar.set_postfix({"loss": f"{row['train_loss']:.4f}", shown: f"{row[f'val_{metric}']:.4g}"})
    if line:
        print(
            f"{cfg.task} {cfg.backbone}/{cfg.init} seed {cfg.seed} step {row['step']}/{cfg.steps} "
            f"loss {row['train_loss']:.4f} {shown} {row[f'val_{metric}']:.4g}",
            file=sys.stderr,
        )


def check_finite(losses: list[float], step: int, lr: float) -> None:
    """Stop the run at the first training loss that is nan or inf in the validation window ending at `step`."""
    bad = next((i for i, value in enumerate(losses) if not math.isfinite(value)), None)
    if bad is not None:
        raise FPTError(
            f"training loss became {losses[bad]} at step {step - len(losses) + 1 + bad} (lr {lr}); lower "
            f"--lr, or check the task's inputs for nan/inf"
        )


def result_record(
    cfg: TrainConfig,
    task: Task,
    model: nn.Module,
    counts: dict[str, int],
    tracker: Tracker,
    test: dict[str, float],
    processes: int,
    device: torch.device,
) -> dict[str, Any]:
    """The run's result.json: what ran (`cfg` resolved), its best-on-validation and test numbers, where and how fast."""
    return {
        "task": cfg.task,
        "model": cfg.model,
        "backbone": cfg.backbone,
        "init": cfg.init,
        "train_groups": list(freeze.parse_groups(cfg.train)),
        **counts,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "steps": cfg.steps,
        "steps_run": tracker.step,
        "best_step": tracker.best["step"],
        "stopped_early": tracker.step < budget(cfg)[0],
        "metric": task.spec.metric,  # what chose the best step; higher is better for accuracy alone
        **{f"val_{name}": value for name, value in tracker.best.items() if name != "step"},
        **{f"test_{name}": value for name, value in test.items()},
        "train_seconds": round(tracker.train_seconds, 3),
        "samples_per_second": round(tracker.samples / max(tracker.train_seconds, 1e-9), 2),
        "processes": processes,
        "task_spec": task.spec.to_dict(),
        "task_info": task.info,
        "backbone_source": getattr(getattr(model, "backbone", None), "source", None),
        "config": cfg.model_dump(),
        "environment": environment(device),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_run(
    out: Path,
    cfg: TrainConfig,
    spec: TaskSpec,
    model: nn.Module,
    curve: list[dict[str, Any]],
    result: dict[str, Any],
    checkpoints: Checkpointer | None,
    initial: dict[str, torch.Tensor] | None = None,
) -> None:
    """A finished run's files in `out`, each written atomically, result.json last: it marks the run finished, so its
    checkpoint goes. With `initial` (the trained tensors' values before the first step), moved.json too."""
    write_trained(out / TRAINED_FILE, model, freeze.parse_groups(cfg.train), cfg, spec)
    if initial is not None:
        write_json(out / MOVED_FILE, moved(model, initial))
    write_record(out, cfg, curve, result)
    if checkpoints is not None:
        checkpoints.remove()


def write_record(out: Path, cfg: TrainConfig, curve: list[dict[str, Any]], result: dict[str, Any]) -> None:
    """curve.jsonl, config.yaml and, last, result.json (which marks a run finished), each written atomically."""
    write_jsonl(out / CURVE_FILE, curve)
    write_atomic(out / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    write_json(out / "result.json", result)


def load_trained(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a trained-groups state (fpt.freeze.trained_state) back into the model; every name must exist."""
    own = dict(model.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise FPTError(f"state has parameters the model lacks: {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)
