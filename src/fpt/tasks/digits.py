"""scikit-learn's 8×8 handwritten digits (1,797 images, shipped offline) as a sequence of patch tokens."""

from __future__ import annotations

import numpy as np
import torch

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import Task, TaskSpec, TensorSplit, stratified_split


def patchify(images: np.ndarray, patch: int) -> np.ndarray:
    """(N, H, W[, C]) → (N, H/p · W/p, p · p · C), patches in row-major order as the paper's 4×4 MNIST tokens."""
    n, h, w = images.shape[:3]
    c = images.shape[3] if images.ndim == 4 else 1
    x = images.reshape(n, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, (h // patch) * (w // patch), patch * patch * c)


@TASKS.register("digits", "image: sklearn 8×8 digits, 2×2 patches → 16 tokens × 4, 10 classes (offline)")
def digits(patch: int = 2, val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0) -> Task:
    from sklearn.datasets import load_digits

    if patch not in (1, 2, 4, 8):
        raise FPTError(f"task argument patch must divide 8 (1, 2, 4 or 8), got {patch}")
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)  # pixel values 0..16 → [0, 1]
    x = torch.from_numpy(patchify(images, patch))
    train, val, test = stratified_split(
        data.target, (1 - val_fraction - test_fraction, val_fraction, test_fraction), split_seed
    )
    spec = TaskSpec(
        "digits",
        "image",
        "features",
        input_dim=patch * patch,
        num_classes=10,
        max_tokens=x.shape[1],
        default_steps=1000,
        default_eval_every=100,
        label_names=tuple(str(d) for d in range(10)),
    )
    splits = {
        name: TensorSplit(x[idx], data.target[idx]) for name, idx in (("train", train), ("val", val), ("test", test))
    }
    return Task(spec, splits, {"split_seed": split_seed, "source": "sklearn.datasets.load_digits"})
