"""Helpers for tasks that read published data files from a folder the user names (`data_dir`).

Every reader turns a missing, truncated or corrupt file into one FPTError line naming the file. Pickle (CIFAR-10
batches, TAPE LMDB values) is read only from paths the user gives, and only through `safe_unpickle`, which refuses
every global except the few that plain dicts of numpy arrays need: a crafted file cannot run code.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from fpt.errors import FPTError

_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core; pickles name either
# (module, name) a pickle may refer to → the object it gets. Nothing else loads.
SAFE_GLOBALS = {
    **{(m, "_reconstruct"): _core.multiarray._reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _core.multiarray.scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _core.numeric._frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles from Python 3 spell bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only dicts, lists and numpy arrays)")
        return SAFE_GLOBALS[(module, name)]


def safe_unpickle(data: bytes, where: str) -> Any:
    """Unpickle `data` (read from the user's file `where`) allowing only plain containers and numpy arrays."""
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # a corrupt pickle can raise almost anything; none of it is the user's to debug
        raise FPTError(f"{where}: not a readable pickle (truncated or corrupt?): {type(e).__name__}: {e}") from None


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by content, not by name)."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except FileNotFoundError:
        raise FPTError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; a cut gzip stream an EOFError
        raise FPTError(f"{path}: corrupt or truncated gzip file: {e}") from None


def data_folder(data_dir: str | Path | None, task: str, expected: str) -> Path:
    """`data_dir` as an existing folder, or an FPTError saying what the task needs there."""
    if data_dir is None:
        raise FPTError(
            f"task {task!r} reads your copy of the data: give --task-args '{{data_dir: DIR}}' with {expected}"
        )
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise FPTError(f"task {task!r}: data_dir {folder} is not a folder; it must hold {expected}")
    return folder


def seeded_subset(labels: np.ndarray, size: int, seed: int, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..N-1 into (rest, a seeded part of `size`), stratified by label where every class allows it."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if size >= len(labels):
        raise FPTError(f"asked for {size} examples out of {len(labels)}; ask for fewer")
    try:
        rest, part = train_test_split(index, test_size=size, stratify=labels if stratify else None, random_state=seed)
    except ValueError:  # a class too small to stratify (or more classes than `size`): a plain seeded draw
        rest, part = train_test_split(index, test_size=size, random_state=seed)
    return np.sort(rest), np.sort(part)
