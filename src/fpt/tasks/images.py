"""The paper's image tasks, read from the user's copy of the published files (task argument `data_dir`).

mnist, fashion-mnist: the four idx files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each gzipped or not); 4×4 patches → 49 tokens × 16.
fashion-mnist finds the files of the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) itself.
cifar10: the python-pickle batches of `cifar-10-batches-py` (data_batch_1..5, test_batch); 4×4 patches → 64 tokens × 48;
random crop (4 pixels of zero padding) and horizontal flip on the training split, on by default.
cifar10-lra: the same files as LRA's image task: grayscale, one pixel a token (1024 × 1), no augmentation.

Splits: none of these publishes a validation split, so `val_size` examples (default 5000) of the training file are
held out, stratified and seeded by `split_seed`, and recorded in `info`: MNIST and Fashion-MNIST 55k/5k/10k, CIFAR-10
45k/5k/10k. `train_size` / `test_size` take a seeded stratified subset for short CPU runs (also recorded).
Pixels are standardised per channel with the mean and std of the training split only.
The CIFAR batches are pickles: they are read only from the folder you give, and through fpt.tasks.files.safe_unpickle,
which loads dicts, lists and numpy arrays and refuses anything else.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fpt.errors import FPTError
from fpt.registry import TASKS
from fpt.tasks.base import Task, TaskSpec, check_positive
from fpt.tasks.files import data_folder, read_bytes, safe_unpickle, seeded_subset

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")
CIFAR_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GRAY = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # the luma weights of tf.image.rgb_to_grayscale, as LRA


# --- image tokens and augmentation -------------------------------------------------------------------------------


def patch_tokens(image: torch.Tensor, patch: int) -> torch.Tensor:
    """(H, W, C) → (H/p · W/p, p · p · C): row-major patches, the order of fpt.tasks.digits.patchify."""
    h, w, c = image.shape
    return image.reshape(h // patch, patch, w // patch, patch, c).permute(0, 2, 1, 3, 4).reshape(-1, patch * patch * c)


def random_crop_flip(image: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """(H, W, C): a random H×W crop of the image zero-padded by `pad`, mirrored left-right with probability 1/2.

    Draws from torch's global generator, which the training loop seeds, so a run's augmentations follow its seed.
    """
    h, w, c = image.shape
    padded = image.new_zeros((h + 2 * pad, w + 2 * pad, c))
    padded[pad : pad + h, pad : pad + w] = image
    top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    image = padded[top : top + h, left : left + w]
    return image.flip(1) if torch.rand(()) < 0.5 else image


class ImageSplit(Dataset):
    """uint8 images (N, H, W, C) in memory, served standardised as patch tokens (augmented when `augment`)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, patch: int, mean, std, augment: bool = False) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1, 1)
        self.patch, self.augment = patch, augment
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.augment:
            image = random_crop_flip(image)
        x = (image.float() / 255.0 - self.mean) / self.std  # (H, W, C)
        return patch_tokens(x, self.patch), self.labels[i]


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, H, W, C) in [0, 1] units, exactly, from 256-bin histograms."""
    values = np.arange(256) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256)
        mean = (counts * values).sum() / counts.sum()
        means.append(round(float(mean), 6))
        stds.append(round(float(np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())) or 1.0, 6))
    return means, stds


# --- file readers ------------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped or not) as an array of the shape its header gives."""
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4 or data[:2] != b"\0\0":
        raise FPTError(f"{path}: not an idx file (it does not start with the idx magic number)")
    kind, ndim = data[2], data[3]
    if kind != 0x08:
        raise FPTError(f"{path}: idx element type 0x{kind:02x}; only unsigned bytes (0x08) are image/label files")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FPTError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise FPTError(
            f"{path}: truncated or corrupt: the header says {'×'.join(map(str, dims))} = {expected} bytes of data, "
            f"the file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx(folder: Path, stem: str) -> Path:
    """`stem`, `stem.gz`, or the `train-images.idx3-ubyte` spelling some copies use."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FPTError(f"{folder}: no {stem} or {stem}.gz; an MNIST-format folder holds {idx_expected()}")


def idx_expected() -> str:
    return ", ".join(f"{name}[.gz]" for pair in IDX_FILES.values() for name in pair)


def read_idx_split(folder: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, size, size, 1) and labels (N,) of one split of an MNIST-format folder, checked against each other."""
    image_file, label_file = (find_idx(folder, stem) for stem in IDX_FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (size, size):
        raise FPTError(f"{image_file}: expected images of {size}×{size}, got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise FPTError(f"{label_file}: {labels.shape} labels for the {len(images)} images of {image_file.name}")
    if labels.max(initial=0) > 9:
        raise FPTError(f"{label_file}: label {labels.max()} out of range 0-9")
    return images[..., None], labels.astype(np.int64), [image_file.name, label_file.name]


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with b'data' uint8 (N, 3072) and b'labels' → (N, 32, 32, 3), (N,)."""
    if not path.is_file():
        raise FPTError(f"{path}: no such file; a cifar-10-batches-py folder holds data_batch_1..5 and test_batch")
    batch = safe_unpickle(read_bytes(path), str(path))
    if not isinstance(batch, dict):
        raise FPTError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise FPTError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {type(data).__name__} {shape}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise FPTError(f"{path}: b'labels' must be {len(data)} labels in 0-9, got shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar(data_dir: str | Path | None, task: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Path]:
    folder = data_folder(data_dir, task, "the cifar-10-batches-py files (data_batch_1..5, test_batch)")
    if (folder / "cifar-10-batches-py").is_dir():  # the parent of the extracted archive is fine too
        folder = folder / "cifar-10-batches-py"
    parts = {}
    for split, names in CIFAR_FILES.items():
        batches = [read_cifar_batch(folder / name) for name in names]
        parts[split] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    return parts, folder


# --- tasks -------------------------------------------------------------------------------------------------------


def image_task(
    spec: TaskSpec,
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    patch: int,
    val_size: int,
    train_size: int | None,
    test_size: int | None,
    split_seed: int,
    augment: bool,
    info: dict,
) -> Task:
    """Train/val/test splits from published train and test arrays (N, H, W, C): val is a seeded stratified part of
    the train file, and train_size / test_size optional seeded stratified subsets."""
    sizes = {"train_size": train_size, "test_size": test_size}
    check_positive(val_size=val_size, **{k: v for k, v in sizes.items() if v is not None})
    images, labels = parts["train"]
    test_images, test_labels = parts["test"]
    if val_size >= len(labels):
        raise FPTError(
            f"task argument val_size={val_size} leaves none of the {len(labels)} training examples to train on"
        )
    rest, val = seeded_subset(labels, val_size, split_seed)
    train = rest
    if train_size is not None and train_size != len(rest):
        if train_size > len(rest):
            raise FPTError(f"task argument train_size={train_size} exceeds the {len(rest)} training examples")
        train = rest[seeded_subset(labels[rest], train_size, split_seed)[1]]
    test = np.arange(len(test_labels))
    if test_size is not None and test_size != len(test):
        if test_size > len(test):
            raise FPTError(f"task argument test_size={test_size} exceeds the {len(test)} test examples")
        test = seeded_subset(test_labels, test_size, split_seed)[1]
    mean, std = channel_stats(images[train])
    splits = {
        "train": ImageSplit(images[train], labels[train], patch, mean, std, augment),
        "val": ImageSplit(images[val], labels[val], patch, mean, std),
        "test": ImageSplit(test_images[test], test_labels[test], patch, mean, std),
    }
    info |= {
        "published_sizes": {"train": len(labels), "test": len(test_labels)},
        "val_from_train": {"size": val_size, "split_seed": split_seed, "stratified": True},
        "train_subset": train_size,
        "test_subset": test_size,
        "patch": patch,
        "augment_train": augment,
        "standardise": {"mean": mean, "std": std},
    }
    return Task(spec, splits, info)


def _check_patch(patch: int, side: int) -> None:
    if not isinstance(patch, int) or patch <= 0 or side % patch:
        divisors = [d for d in range(1, side + 1) if side % d == 0]
        raise FPTError(f"task argument patch must divide {side} ({', '.join(map(str, divisors))}), got {patch!r}")


def idx_task(name: str, folder: Path, patch: int, labels: tuple[str, ...], steps: int, **split_args) -> Task:
    _check_patch(patch, 28)
    parts, files = {}, []
    for split in IDX_FILES:
        images, targets, names = read_idx_split(folder, split, 28)
        parts[split] = (images, targets)
        files += names
    spec = TaskSpec(
        name,
        "image",
        "features",
        input_dim=patch * patch,
        num_classes=10,
        max_tokens=(28 // patch) ** 2,
        default_steps=steps,
        default_eval_every=steps // 10,
        label_names=labels,
    )
    info = {"source": str(folder.resolve()), "files": files}
    return image_task(spec, parts, patch=patch, augment=False, info=info, **split_args)


@TASKS.register("mnist", "image: MNIST idx files (data_dir), 4×4 patches → 49 tokens × 16, 10 classes; 55k/5k/10k")
def mnist(
    data_dir: str | None = None,
    patch: int = 4,
    val_size: int = 5000,
    train_size: int | None = None,
    test_size: int | None = None,
    split_seed: int = 0,
) -> Task:
    """MNIST from the four idx files in `data_dir`; val is a seeded stratified 5000 of the 60k training images."""
    folder = data_folder(data_dir, "mnist", idx_expected())
    return idx_task(
        "mnist",
        folder,
        patch,
        tuple(map(str, range(10))),
        2000,
        val_size=val_size,
        train_size=train_size,
        test_size=test_size,
        split_seed=split_seed,
    )


@TASKS.register(
    "fashion-mnist",
    "image: Fashion-MNIST idx files (data_dir, or Debian's dataset-fashion-mnist), 4×4 patches → 49 tokens × 16, "
    "10 classes; 55k/5k/10k",
)
def fashion_mnist(
    data_dir: str | None = None,
    patch: int = 4,
    val_size: int = 5000,
    train_size: int | None = None,
    test_size: int | None = None,
    split_seed: int = 0,
) -> Task:
    """Fashion-MNIST from `data_dir`, or by default from the Debian package's folder when it is installed."""
    if data_dir is None and not DEBIAN_FASHION_MNIST.is_dir():
        raise FPTError(
            "fashion-mnist: no data_dir given and the Debian package is not installed: run "
            f"'apt-get install dataset-fashion-mnist' (files land in {DEBIAN_FASHION_MNIST}), or give "
            f"--task-args '{{data_dir: DIR}}' with {idx_expected()}"
        )
    folder = data_folder(data_dir or DEBIAN_FASHION_MNIST, "fashion-mnist", idx_expected())
    return idx_task(
        "fashion-mnist",
        folder,
        patch,
        FASHION_LABELS,
        2000,
        val_size=val_size,
        train_size=train_size,
        test_size=test_size,
        split_seed=split_seed,
    )


@TASKS.register(
    "cifar10", "image: CIFAR-10 python batches (data_dir), 4×4 patches → 64 tokens × 48, 10 classes; 45k/5k/10k"
)
def cifar10(
    data_dir: str | None = None,
    patch: int = 4,
    augment: bool = True,
    val_size: int = 5000,
    train_size: int | None = None,
    test_size: int | None = None,
    split_seed: int = 0,
) -> Task:
    """CIFAR-10 from `cifar-10-batches-py`; random crop + flip on the training split unless `augment` is false."""
    _check_patch(patch, 32)
    if not isinstance(augment, bool):
        raise FPTError(f"task argument augment must be true or false, got {augment!r}")
    parts, folder = read_cifar(data_dir, "cifar10")
    spec = TaskSpec(
        "cifar10",
        "image",
        "features",
        input_dim=patch * patch * 3,
        num_classes=10,
        max_tokens=(32 // patch) ** 2,
        default_steps=5000,
        default_eval_every=500,
        label_names=CIFAR_LABELS,
    )
    info = {"source": str(folder.resolve()), "files": [n for names in CIFAR_FILES.values() for n in names]}
    return image_task(
        spec,
        parts,
        patch=patch,
        augment=augment,
        info=info,
        val_size=val_size,
        train_size=train_size,
        test_size=test_size,
        split_seed=split_seed,
    )


@TASKS.register(
    "cifar10-lra", "image: CIFAR-10 as LRA's image task (data_dir): grayscale, 1024 tokens × 1, 10 classes; 45k/5k/10k"
)
def cifar10_lra(
    data_dir: str | None = None,
    val_size: int = 5000,
    train_size: int | None = None,
    test_size: int | None = None,
    split_seed: int = 0,
) -> Task:
    """CIFAR-10 in grayscale (LRA's luma weights, rounded to bytes), one pixel a token, no augmentation."""
    parts, folder = read_cifar(data_dir, "cifar10-lra")
    gray = {s: (np.rint(x @ GRAY).clip(0, 255).astype(np.uint8)[..., None], y) for s, (x, y) in parts.items()}
    spec = TaskSpec(
        "cifar10-lra",
        "image",
        "features",
        input_dim=1,
        num_classes=10,
        max_tokens=1024,
        default_steps=5000,
        default_eval_every=500,
        label_names=CIFAR_LABELS,
    )
    info = {
        "source": str(folder.resolve()),
        "files": [n for names in CIFAR_FILES.values() for n in names],
        "grayscale": GRAY.tolist(),
    }
    return image_task(
        spec,
        gray,
        patch=1,
        augment=False,
        info=info,
        val_size=val_size,
        train_size=train_size,
        test_size=test_size,
        split_seed=split_seed,
    )
