"""Data parallelism: the same `fpt train` on several processes, under torchrun or accelerate launch.

    torchrun --nproc_per_node 2 -m fpt train --task bit-memory --out runs/mem
    accelerate launch --num_processes 2 -m fpt train --task bit-memory --out runs/mem

A launcher sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1 fpt.train joins the
process group (gloo on CPUs, nccl on GPUs, one GPU per process) and wraps the model in DistributedDataParallel, which
averages the trained tensors' gradients (frozen ones have none). Every process walks the same global batches, in the
order a 1-process run draws them, and computes on its own rows (rank, rank + world, ...); each rank's loss is weighted
by its share of the global batch, so the averaged gradient is the global batch's. Evaluation is sharded the same way
and summed. Hence a run on N processes takes the same steps as on one, up to floating-point summation order; with
dropout on, each process draws its own masks. Only rank 0 shows progress and writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, Sampler


@dataclass(frozen=True)
class Group:
    """This process's place among the run's processes (rank 0 of 1 when not launched in parallel)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> list[int]:
        """This rank's items of n: rank, rank + world, ..."""
        return list(range(self.rank, n, self.world))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `tensor` over the processes (itself alone in one process)."""
        if self.world > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out


def launched() -> Group:
    """The group a launcher (torchrun, accelerate launch) describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    return Group(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def join(group: Group, device: torch.device) -> tuple[torch.device, bool]:
    """Join the process group for `group` (one GPU per process on CUDA): (this process's device, whether this call
    started the group, and so should end it)."""
    if group.world == 1:
        return device, False
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device, False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=group.rank, world_size=group.world)
    return device, True


def leave(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def parallel(model: nn.Module, group: Group, device: torch.device) -> nn.Module:
    """The model wrapped for data-parallel training (the model itself in one process). static_graph: the same
    parameters get gradients at every step, and trained ones the forward never reaches (a BERT's word embeddings
    under `train: all`, unused with features as input) are allowed."""
    if group.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)


class RankBatches(Sampler[list[int]]):
    """A rank's rows of each global batch of `batches`: the global order is the 1-process order."""

    def __init__(self, batches: BatchSampler, group: Group) -> None:
        self.batches, self.group = batches, group

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.group.rank :: self.group.world]

    def __len__(self) -> int:
        return len(self.batches)
