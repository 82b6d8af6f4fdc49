"""The paper's two synthetic bit tasks, generated on the fly from (seed, index) so any size costs no memory.

bit-xor: two n-bit strings as 2n tokens of one 0/1 value; predict the n XOR bits from the last n tokens.
bit-memory: k random ±1 patterns of `bits` bits, then one of them with each bit masked (0) with probability
`mask_prob`; tokens are patches of `patch` bits, (k + 1) × bits / patch of them; predict the queried pattern's
bits (2-way each) from the last bits / patch tokens.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import Task, TaskSpec, check_positive

# Split seeds are offsets of the data seed, so the three splits are independent streams.
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


class GeneratedSplit(Dataset):
    """Example i is `make(rng)` with rng = numpy's generator seeded by (data_seed, split, i): same i, same example."""

    def __init__(self, make, size: int, seed: int, split: str) -> None:
        self.make, self.size, self.seed, self.offset = make, size, seed, SPLIT_OFFSETS[split]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.make(np.random.default_rng([self.seed, self.offset, i]))
        return torch.from_numpy(x), torch.from_numpy(y)


def generated_task(spec: TaskSpec, make, sizes: dict[str, int], seed: int, params: dict) -> Task:
    splits = {s: GeneratedSplit(make, n, seed, s) for s, n in sizes.items()}
    return Task(spec, splits, {"data_seed": seed, "params": params, "generated": True})


@TASKS.register("bit-xor", "bits: XOR of two n-bit strings, 2n tokens × 1, n 2-way outputs (paper: n=5)")
def bit_xor(
    n_bits: int = 5, train_size: int = 100_000, val_size: int = 1000, test_size: int = 1000, seed: int = 1234
) -> Task:
    check_positive(n_bits=n_bits, train_size=train_size, val_size=val_size, test_size=test_size)

    def make(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        a, b = rng.integers(0, 2, size=(2, n_bits))
        x = np.concatenate([a, b]).astype(np.float32)[:, None]  # (2n, 1): bits as 0/1 floats, as the paper
        return x, (a ^ b).astype(np.int64)

    spec = TaskSpec(
        "bit-xor",
        "bits",
        "features",
        input_dim=1,
        num_classes=2,
        max_tokens=2 * n_bits,
        num_outputs=n_bits,
        default_steps=600,
        default_eval_every=100,
    )
    return generated_task(
        spec, make, {"train": train_size, "val": val_size, "test": test_size}, seed, {"n_bits": n_bits}
    )


@TASKS.register("bit-memory", "bits: recall a masked 1000-bit pattern among 5, 120 tokens × 50, 1000 2-way outputs")
def bit_memory(
    n_patterns: int = 5,
    n_bits: int = 1000,
    patch: int = 50,
    mask_prob: float = 0.5,
    train_size: int = 100_000,
    val_size: int = 500,
    test_size: int = 1000,
    seed: int = 1234,
) -> Task:
    check_positive(
        n_patterns=n_patterns, n_bits=n_bits, patch=patch, train_size=train_size, val_size=val_size, test_size=test_size
    )
    if n_bits % patch:
        raise FPTError(f"task argument n_bits ({n_bits}) must be a multiple of patch ({patch})")
    if not 0.0 <= mask_prob < 1.0:
        raise FPTError(f"task argument mask_prob must be in [0, 1), got {mask_prob}")
    per_pattern = n_bits // patch

    def make(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        patterns = rng.integers(0, 2, size=(n_patterns, n_bits)) * 2 - 1  # ±1
        target = patterns[rng.integers(n_patterns)]
        query = np.where(rng.random(n_bits) < mask_prob, 0, target)
        x = np.concatenate([patterns, query[None]]).astype(np.float32).reshape(-1, patch)  # ((k+1)·bits/patch, patch)
        return x, (target > 0).astype(np.int64)

    spec = TaskSpec(
        "bit-memory",
        "bits",
        "features",
        input_dim=patch,
        num_classes=2,
        max_tokens=(n_patterns + 1) * per_pattern,
        num_outputs=per_pattern,
        predictions_per_token=patch,
        default_steps=300,
        default_eval_every=50,
    )
    return generated_task(
        spec,
        make,
        {"train": train_size, "val": val_size, "test": test_size},
        seed,
        {"n_patterns": n_patterns, "n_bits": n_bits, "patch": patch, "mask_prob": mask_prob},
    )
