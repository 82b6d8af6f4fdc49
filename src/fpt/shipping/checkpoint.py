"""Checkpoints, so that a killed run resumes and ends with the same numbers as one that was never stopped.

At each validation fpt.train writes RUN_DIR/checkpoint.safetensors through a temporary file and a rename, so a kill
at any moment leaves either the previous checkpoint or the new one. It holds everything the next step depends on:
the trained tensors, the optimizer's moments, the scheduler, the loop's fpt.evaluate.Tracker (best on validation,
patience, curve, counters), torch's RNG state (dropout) and the data order (the sampler generator's state at the
start of the current epoch and the number of batches taken from it). Tensors are safetensors; everything else is
JSON in its header; no pickle. `fpt train --resume --out RUN_DIR` continues from it; a finished run deletes it.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic import Field as PydanticField
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from fpt import freeze
from fpt.config import TrainConfig, format_validation_error, identity, make_config
from fpt.distributed import Group, RankBatches
from fpt.errors import FPTError
from fpt.evaluate import COUNTERS, Tracker
from fpt.shipping.patch import (
    frozen_fingerprint,
    load_state_strict,
    read_file,
    read_metadata,
    read_safetensors,
    save_safetensors,
)
from fpt.tasks.base import collate

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "fpt-checkpoint/1"


class ResumableSampler(RandomSampler):
    """A seeded RandomSampler that records its generator's state at the start of each epoch and can start an epoch
    part-way (`skip` indices in), drawing exactly what a full epoch draws."""

    def __init__(self, data: Dataset, generator: torch.Generator) -> None:
        super().__init__(data, generator=generator)
        self.epoch_start: torch.Tensor | None = None
        self.skip = 0

    def __iter__(self):
        self.epoch_start = self.generator.get_state()
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class BatchStream:
    """Shuffled training batches, epoch after epoch, in an order fixed by `seed`; `state()` → `restore()` rebuilds
    the stream at the same batch. Batches are those of DataLoader(RandomSampler(generator=seed)), draw for draw; in a
    data-parallel run, `group`'s rows of each (fpt.distributed)."""

    def __init__(
        self, split: Dataset, batch_size: int, seed: int, pin_memory: bool = False, group: Group | None = None
    ) -> None:
        self.batch_size = batch_size
        self.global_size = min(batch_size, len(split))  # rows per step, over all processes
        self.sampler = ResumableSampler(split, torch.Generator().manual_seed(seed))
        batches = BatchSampler(self.sampler, batch_size, drop_last=len(split) >= batch_size)
        self.per_epoch = len(batches)  # batches in an epoch (over all processes)
        self.loader = DataLoader(
            split,
            batch_sampler=RankBatches(batches, group or Group()),
            collate_fn=collate,
            pin_memory=pin_memory,  # page-locked batches: the copy to a GPU runs without blocking the host
        )
        self.iterator = None
        self.position = 0  # batches taken from the current epoch

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        if self.iterator is not None:
            try:
                batch = next(self.iterator)
                self.position += 1
                return batch
            except StopIteration:
                pass
        self.iterator = iter(self.loader)  # a new epoch (DataLoader draws one number from torch's global RNG here)
        batch = next(self.iterator)
        self.position = 1
        return batch

    def state(self) -> tuple[torch.Tensor, int]:
        assert self.sampler.epoch_start is not None, "no batch taken yet"
        return self.sampler.epoch_start, self.position

    def restore(self, epoch_start: torch.Tensor, position: int) -> None:
        """Replay the current epoch from its start, skipping the batches already taken. Restore torch's global RNG
        after this call: opening the epoch draws from it, as it did before the checkpoint."""
        self.sampler.generator.set_state(epoch_start)
        self.sampler.skip = position * self.batch_size
        self.iterator = iter(self.loader)
        self.position = position


def no_checkpoint(out: Path) -> str:
    if (out / "result.json").is_file():
        raise FPTError(f"{out} holds a finished run (result.json); there is nothing to resume")
    return f"no checkpoint in {out}"


def saved_config(out: str | Path) -> TrainConfig:
    """The config of the run whose checkpoint is in `out` (what `fpt train --resume --out DIR` continues)."""
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        raise FPTError(f"{no_checkpoint(Path(out))} to take the config from; give the run's options to start it")
    config = read_metadata(path, CHECKPOINT_FORMAT).get("config")
    if not isinstance(config, dict):
        raise FPTError(f"{path}: corrupt checkpoint metadata (config: missing or not a mapping)")
    return make_config(config)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    saved, current = identity(saved), identity(current)  # threads and device may change between sessions
    keys = set(saved) | set(current)
    differing = sorted(k for k in keys if saved.get(k) != current.get(k))
    return [f"{k} (checkpoint {saved.get(k)!r}, now {current.get(k)!r})" for k in differing]


def optimizer_state(tensors: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    """A checkpoint's "optimizer/<index>/<name>" tensors as torch's optimizer state: index → {name: tensor}."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/")
            state.setdefault(int(index), {})[name] = value
    return state


class CheckpointMeta(BaseModel):
    """The metadata a checkpoint must hold, with its types (checked before anything is restored)."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: str
    config: dict[str, Any]
    frozen_sha256: str
    position: int
    step: int = PydanticField(ge=1)
    best: dict[str, float | int]
    curve: list[dict[str, Any]] = PydanticField(min_length=1)
    counters: dict[str, float | int | bool]
    optimizer_groups: list[dict[str, Any]] = PydanticField(min_length=1)
    scheduler: dict[str, Any]

    @field_validator("curve")
    @classmethod
    def _steps(cls, curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not all(isinstance(row.get("step"), int) and not isinstance(row.get("step"), bool) for row in curve):
            raise ValueError("every row needs an integer step")
        return curve

    @field_validator("counters")
    @classmethod
    def _counters(cls, counters: dict[str, Any]) -> dict[str, Any]:
        missing = [name for name in COUNTERS if name not in counters]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        return counters


class Checkpointer:
    """Saves and restores one run's checkpoint in `out`. `config` is the resolved config (steps, eval_every set)."""

    def __init__(
        self,
        out: str | Path,
        config: TrainConfig,
        model: nn.Module,
        groups: tuple[str, ...],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        batches: BatchStream,
        group: Group | None = None,
    ) -> None:
        self.path = Path(out) / CHECKPOINT_FILE
        self.group = group or Group()  # every rank saves and loads; rank 0 alone writes
        self.config = json.loads(json.dumps(config.model_dump()))  # as it reads back from JSON
        self.model, self.groups, self.optimizer, self.scheduler, self.batches = (
            model, groups, optimizer, scheduler, batches,
        )  # fmt: skip
        self.device = next(model.parameters()).device
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:  # hashed once per run: the frozen weights never change
            self._fingerprint = frozen_fingerprint(self.model, self.groups)
        return self._fingerprint

    def save(self, tracker: Tracker) -> None:
        rng = self.group.gather(torch.get_rng_state())  # each rank's dropout stream
        rng_cuda = self.group.gather(torch.cuda.get_rng_state(self.device)) if self.device.type == "cuda" else []
        if not self.group.main:
            return
        optimizer = self.optimizer.state_dict()
        tensors = {f"trained/{n}": t for n, t in freeze.trained_state(self.model, self.groups).items()}
        tensors |= {f"best/{n}": t for n, t in tracker.best_state.items()}
        tensors |= {f"optimizer/{i}/{k}": v for i, s in optimizer["state"].items() for k, v in s.items()}
        epoch_start, position = self.batches.state()
        tensors |= {"rng/torch": rng[0], "rng/sampler": epoch_start}
        if self.device.type == "cuda":
            tensors["rng/cuda"] = rng_cuda[0]
        tensors |= {f"rng/torch/{rank}": state for rank, state in enumerate(rng) if rank}  # ranks 1.. of a parallel run
        tensors |= {f"rng/cuda/{rank}": state for rank, state in enumerate(rng_cuda) if rank}
        save_safetensors(
            self.path,
            tensors,
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.config,
                "frozen_sha256": self.fingerprint,
                "position": position,
                **tracker.metadata(),
                "optimizer_groups": optimizer["param_groups"],
                "optimizer_state": sorted(optimizer["state"]),  # trained tensors with state (a tensor that never
                # had a gradient, e.g. an unused embedding of a fully trained baseline, has none)
                "scheduler": self.scheduler.state_dict(),
            },
        )

    def load(self) -> Tracker | None:
        """Restore the run from its checkpoint; None (and a note) when there is none yet."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp") if self.group.main else ():
            stale.unlink(missing_ok=True)  # a write cut short by SIGKILL
        if not self.path.is_file():
            print(f"fpt: {no_checkpoint(self.path.parent)}; starting the run from step 0", file=sys.stderr)
            return None
        tensors, meta = read_safetensors(read_file(self.path), str(self.path), CHECKPOINT_FORMAT, finite_floats=False)
        self.check(tensors, meta)
        try:
            return self.restore(tensors, meta)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:  # what the checks cannot foresee
            raise FPTError(f"{self.path}: corrupt checkpoint ({type(err).__name__}: {err})") from None

    def check(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Before anything is restored: the metadata has its fields and types, agrees with itself (step, curve,
        validation schedule, data position) and with the run, and the tensors are what a run saves (finite weights
        and optimizer moments, RNG states of the right shape)."""
        where = str(self.path)
        try:
            CheckpointMeta(**meta)
        except ValidationError as err:
            message = format_validation_error(err, CheckpointMeta)
            raise FPTError(f"{where}: corrupt checkpoint metadata ({message})") from None
        differences = config_differences(meta["config"], self.config)
        if differences:
            raise FPTError(f"cannot resume {self.path.parent}: the config differs in {'; '.join(differences)}")
        if meta["frozen_sha256"] != self.fingerprint:
            raise FPTError(f"cannot resume {self.path.parent}: the backbone's frozen weights differ from the run's")
        steps, every = self.config["steps"], self.config["eval_every"]
        validated = [row["step"] for row in meta["curve"]]
        schedule = [s for s in range(1, steps + 1) if s % every == 0 or s == steps][: len(validated)]
        if validated != schedule or not validated or meta["step"] != validated[-1]:
            raise FPTError(
                f"{where}: the checkpoint's step {meta['step']} disagrees with its learning curve (validated at "
                f"{validated[:3]}{'…' if len(validated) > 3 else ''}, {len(validated)} rows; every {every} steps)"
            )
        if not 1 <= meta["position"] <= self.batches.per_epoch:
            raise FPTError(
                f"{where}: the checkpoint's data position {meta['position']} is outside an epoch of "
                f"{self.batches.per_epoch} batches"
            )
        expected = {"rng/torch": torch.get_rng_state(), "rng/sampler": self.batches.sampler.generator.get_state()}
        for name, like in expected.items():
            state = tensors.get(name)
            if state is None or state.dtype != like.dtype or state.shape != like.shape:
                got = "missing" if state is None else f"{str(state.dtype).removeprefix('torch.')} {list(state.shape)}"
                raise FPTError(f"{where}: RNG state {name!r} is {got}, not uint8 {list(like.shape)}")
        for name, t in tensors.items():
            if not name.startswith("rng/") and t.is_floating_point() and not torch.isfinite(t).all():
                raise FPTError(f"{where}: tensor {name!r} holds NaN or inf values: the checkpoint is corrupt")
        self.check_optimizer(tensors, meta, where)

    def check_optimizer(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: str) -> None:
        """Every trained tensor the checkpoint says has optimizer state has its moments and step, shaped like it
        (torch would silently start a tensor whose state is missing from zero), and no other tensor has state."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        saved = optimizer_state(tensors)
        listed = meta.get("optimizer_state", sorted(saved))  # checkpoints written before the list: what they hold
        if not isinstance(listed, list) or set(saved) != set(listed) or not set(listed) <= set(range(len(params))):
            raise FPTError(
                f"{where}: optimizer state for tensors {sorted(saved)[:5]}… but the checkpoint lists "
                f"{str(listed)[:40]} of {len(params)} trained tensors: the checkpoint is corrupt"
            )
        for i in listed:
            state, shape = saved[i], params[i].shape
            moments = [n for n in ("exp_avg", "exp_avg_sq") if n not in state or state[n].shape != shape]
            if moments or "step" not in state:
                raise FPTError(f"{where}: optimizer state of trained tensor {i} is missing or misshaped "
                               f"({', '.join(moments) or 'step'}): the checkpoint is corrupt")  # fmt: skip

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Tracker:
        """Load the checked checkpoint into the model, optimizer, scheduler, data stream and RNGs."""

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        load_state_strict(self.model, part("trained/"), self.groups, str(self.path))
        state = optimizer_state(tensors)
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["optimizer_groups"]]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.scheduler.load_state_dict(meta["scheduler"])
        self.batches.restore(tensors["rng/sampler"], meta["position"])
        own = f"/{self.group.rank}" if f"rng/torch/{self.group.rank}" in tensors else ""  # rank 0's: "rng/torch"
        torch.set_rng_state(tensors["rng/torch" + own])  # after restore(): see BatchStream.restore
        if f"rng/cuda{own}" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"rng/cuda{own}"], self.device)
        return Tracker.from_metadata(meta, part("best/"))

    def remove(self) -> None:
        if self.group.main:
            self.path.unlink(missing_ok=True)
