"""Image tasks on tiny files written here in the published formats: idx (MNIST, Fashion-MNIST) and CIFAR-10 pickles."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

import fpt
from fpt.cli import main
from fpt.tasks import images
from fpt.tasks.digits import patchify


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    data = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_mnist(folder, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0):
    """A tiny MNIST-format folder: class c images are bright in row band c, so labels are checkable from pixels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        imgs = rng.integers(0, 50, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            imgs[i, 2 * c : 2 * c + 2] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", imgs, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
        out[split] = (imgs, labels)
    return out


def cifar_pickle(n: int, seed: int, numpy_core_name: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).tolist()
    batch = {b"batch_label": b"tiny", b"labels": labels, b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    data = pickle.dumps(batch, protocol=2)
    # The published batches were pickled by Python 2 numpy, which names numpy.core.multiarray.
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if numpy_core_name else data


def make_cifar(folder, n: int = 20):
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(cifar_pickle(n, i, numpy_core_name=i == 1))
    (batches / "test_batch").write_bytes(cifar_pickle(n, 9))
    return batches


@pytest.fixture
def mnist_dir(tmp_path):
    make_mnist(tmp_path / "mnist")
    return tmp_path / "mnist"


def all_labels(split) -> list[int]:
    return [int(split[i][1]) for i in range(len(split))]


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_shapes_labels_and_seeded_val(tmp_path, gz):
    written = make_mnist(tmp_path, gz=gz)
    task = fpt.get_task("mnist", data_dir=str(tmp_path), val_size=10)
    assert task.spec.shape() == "49 tokens × 16" and task.spec.num_classes == 10
    assert task.info["split_sizes"] == {"train": 50, "val": 10, "test": 20}
    assert task.info["val_from_train"] == {"size": 10, "split_seed": 0, "stratified": True}
    assert sorted(all_labels(task.splits["val"])) == list(range(10))  # stratified: one of each class
    x, y = task.splits["test"][3]
    assert x.shape == (49, 16) and x.dtype == torch.float32 and int(y) == 3
    # test images are the t10k file in order; undo the standardisation and compare pixels
    mean, std = task.info["standardise"]["mean"][0], task.info["standardise"]["std"][0]
    pixels = torch.from_numpy(patchify(written["t10k"][0][3:4, :, :, None] / 255.0, 4)[0]).float()
    assert torch.allclose(x * std + mean, pixels, atol=1e-5)
    again = fpt.get_task("mnist", data_dir=str(tmp_path), val_size=10)
    assert torch.equal(again.splits["val"][0][0], task.splits["val"][0][0])  # the same seeded split


def test_standardised_by_training_split_and_subsets(mnist_dir):
    task = fpt.get_task("mnist", data_dir=str(mnist_dir), val_size=10, train_size=20, test_size=10)
    assert task.info["split_sizes"] == {"train": 20, "val": 10, "test": 10}
    assert sorted(all_labels(task.splits["train"])) == sorted(list(range(10)) * 2)
    train = torch.stack([task.splits["train"][i][0] for i in range(20)])
    assert abs(train.mean().item()) < 1e-4 and abs(train.std().item() - 1) < 1e-2
    with pytest.raises(fpt.FPTError, match="train_size=51 exceeds the 50 training examples"):
        fpt.get_task("mnist", data_dir=str(mnist_dir), val_size=10, train_size=51)
    with pytest.raises(fpt.FPTError, match="val_size=60 leaves none of the 60 training examples"):
        fpt.get_task("mnist", data_dir=str(mnist_dir), val_size=60)


def test_patch_argument(mnist_dir):
    assert fpt.get_task("mnist", data_dir=str(mnist_dir), val_size=10, patch=7).splits["val"][0][0].shape == (16, 49)
    with pytest.raises(fpt.FPTError, match="patch must divide 28"):
        fpt.get_task("mnist", data_dir=str(mnist_dir), patch=5)


def test_fashion_mnist_finds_the_debian_files(tmp_path, monkeypatch):
    make_mnist(tmp_path / "debian")
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    task = fpt.get_task("fashion-mnist", val_size=10)
    assert task.info["source"] == str((tmp_path / "debian").resolve()) and task.spec.label_names[9] == "Boot"
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(fpt.FPTError, match="apt-get install dataset-fashion-mnist"):
        fpt.get_task("fashion-mnist")


def test_data_dir_is_required_and_must_exist(tmp_path):
    with pytest.raises(fpt.FPTError, match=r"task 'mnist' reads your copy of the data: give --task-args"):
        fpt.get_task("mnist")
    with pytest.raises(fpt.FPTError, match="is not a folder"):
        fpt.get_task("cifar10", data_dir=str(tmp_path / "nope"))
    with pytest.raises(fpt.FPTError, match="no t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz"):
        make_mnist(tmp_path)
        (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
        fpt.get_task("mnist", data_dir=str(tmp_path))


def damage_idx(folder, how: str) -> str:
    path = folder / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    if how == "truncated gzip":
        path.write_bytes(data[: len(data) // 2])
    elif how == "corrupt gzip":
        path.write_bytes(data[:10] + bytes(len(data) - 10))
    elif how == "truncated data":
        path.write_bytes(gzip.compress(gzip.decompress(data)[:-100]))
    elif how == "bad magic":
        path.write_bytes(gzip.compress(b"\x12\x34" + gzip.decompress(data)[2:]))
    elif how == "label count":
        labels = folder / "train-labels-idx1-ubyte.gz"
        write_idx(labels, np.zeros(7, dtype=np.uint8), gz=True)
        return "train-labels-idx1-ubyte.gz: .*7.* labels for the 60 images"
    return {
        "truncated gzip": "corrupt or truncated gzip",
        "corrupt gzip": "corrupt or truncated gzip",
        "truncated data": "truncated or corrupt: the header says 60×28×28 = 47040 bytes of data, the file has 46940",
        "bad magic": "not an idx file",
    }[how]


@pytest.mark.parametrize("how", ["truncated gzip", "corrupt gzip", "truncated data", "bad magic", "label count"])
def test_corrupt_idx_files_give_one_line_naming_the_file(mnist_dir, how):
    message = damage_idx(mnist_dir, how)
    with pytest.raises(fpt.FPTError, match=message) as err:
        fpt.get_task("mnist", data_dir=str(mnist_dir))
    assert "\n" not in str(err.value) and str(mnist_dir) in str(err.value)


def test_cli_prints_one_line_for_a_corrupt_file(mnist_dir, capsys):
    damage_idx(mnist_dir, "truncated data")
    code = main(["train", "--task", "mnist", "--task-args", f"{{data_dir: '{mnist_dir}'}}", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("fpt: error: ") and "train-images-idx3-ubyte.gz" in err


# --- CIFAR-10 ------------------------------------------------------------------------------------------------------


def test_cifar10_shapes_labels_and_augmentation(tmp_path):
    make_cifar(tmp_path)
    task = fpt.get_task("cifar10", data_dir=str(tmp_path), val_size=20)  # the parent of cifar-10-batches-py is fine
    assert task.spec.shape() == "64 tokens × 48" and task.info["split_sizes"] == {"train": 80, "val": 20, "test": 20}
    assert task.splits["train"].augment and not task.splits["val"].augment and not task.splits["test"].augment
    x, y = task.splits["test"][5]
    assert x.shape == (64, 48) and int(y) == 5
    torch.manual_seed(0)
    views = [task.splits["train"][0][0] for _ in range(4)]
    assert any(not torch.equal(views[0], v) for v in views[1:])  # augmented: random crops and flips
    assert torch.equal(task.splits["val"][0][0], task.splits["val"][0][0])
    plain = fpt.get_task("cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"), val_size=20, augment=False)
    assert not plain.splits["train"].augment


def test_cifar10_tokens_follow_the_pixels(tmp_path):
    batches = make_cifar(tmp_path)
    raw = pickle.loads((batches / "test_batch").read_bytes(), encoding="bytes")[b"data"]
    image = raw[2].reshape(3, 32, 32).transpose(1, 2, 0)  # (H, W, C)
    task = fpt.get_task("cifar10", data_dir=str(tmp_path), val_size=20)
    mean, std = (torch.tensor(task.info["standardise"][k]) for k in ("mean", "std"))
    x = task.splits["test"][2][0].reshape(64, 4, 4, 3) * std + mean  # (tokens, p, p, C)
    assert torch.allclose(x[1], torch.from_numpy(image[0:4, 4:8] / 255.0).float(), atol=1e-5)  # token 1: row 0, col 1


def test_cifar10_lra_is_grayscale_pixels(tmp_path):
    batches = make_cifar(tmp_path)
    task = fpt.get_task("cifar10-lra", data_dir=str(tmp_path), val_size=20)
    assert task.spec.shape() == "1024 tokens × 1" and not task.splits["train"].augment
    raw = pickle.loads((batches / "test_batch").read_bytes(), encoding="bytes")[b"data"][0].reshape(3, 1024)
    gray = np.rint(raw.T.astype(np.float32) @ images.GRAY)
    mean, std = task.info["standardise"]["mean"][0], task.info["standardise"]["std"][0]
    x = task.splits["test"][0][0][:, 0] * std + mean
    assert np.allclose(x.numpy() * 255, gray, atol=1e-3)


def test_random_crop_flip():
    image = torch.arange(2 * 3 * 1, dtype=torch.uint8).reshape(2, 3, 1) + 1
    torch.manual_seed(0)
    seen = {tuple(images.random_crop_flip(image, pad=1).flatten().tolist()) for _ in range(200)}
    assert tuple(image.flatten().tolist()) in seen and tuple(image.flip(1).flatten().tolist()) in seen
    assert all(len(s) == 6 for s in seen) and len(seen) > 10  # shifted with zero padding, and mirrored


@pytest.mark.parametrize("damage", ["truncated", "not a dict", "wrong shape", "code"])
def test_corrupt_cifar_batches_give_one_line_naming_the_file(tmp_path, damage):
    batches = make_cifar(tmp_path)
    path = batches / "data_batch_3"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
        message = "data_batch_3: not a readable pickle"
    elif damage == "not a dict":
        path.write_bytes(pickle.dumps([1, 2], protocol=2))
        message = "data_batch_3: expected a pickled dict, got list"
    elif damage == "wrong shape":
        path.write_bytes(pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}))
        message = r"data_batch_3: b'data' must be a uint8 array of shape \(N, 3072\)"
    else:
        path.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")  # a pickle that would run a shell command
        message = "data_batch_3: not a readable pickle .*refusing to load os.system"
    with pytest.raises(fpt.FPTError, match=message) as err:
        fpt.get_task("cifar10", data_dir=str(tmp_path))
    assert "\n" not in str(err.value) and str(batches) in str(err.value)
