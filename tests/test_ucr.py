import socket

import pytest
import torch

from fpt.errors import FPTError
from fpt.tasks import collate, get_task
from fpt.tasks.ucr import shipped_datasets


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every UCR task must come from files on disk: any attempt to connect fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("ucr tasks must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def stacked(split) -> torch.Tensor:
    return torch.cat([x for x, _ in split])


def test_shipped_classification_sets_are_found():
    names = shipped_datasets()
    assert {"GunPoint", "ArrowHead", "BasicMotions", "JapaneseVowels"} <= set(names)
    assert "Covid3Month" not in names  # a regression set ships too; it is not a classification task


def test_gunpoint_shapes_classes_and_splits():
    task = get_task("ucr:GunPoint", patch=1)
    spec = task.spec
    assert (spec.name, spec.input, spec.input_dim, spec.num_classes, spec.max_tokens) == (
        "ucr:GunPoint",
        "features",
        1,
        2,
        150,
    )
    assert spec.label_names == ("1", "2") and spec.readout == "mean"
    sizes = task.info["split_sizes"]
    assert sizes["train"] + sizes["val"] == 50 and sizes["val"] == 10 and sizes["test"] == 150
    assert task.info["split_seed"] == 0
    x, y = task.splits["train"][0]
    assert x.shape == (150, 1) and x.dtype == torch.float32 and y.item() in (0, 1)


def test_standardised_per_channel_with_training_statistics_only():
    task = get_task("ucr:BasicMotions", patch=1)  # not z-normalised per series, unlike GunPoint
    train, val = stacked(task.splits["train"]), stacked(task.splits["val"])  # (N·T, 6)
    assert train.mean(0).abs().max() < 1e-4 and (train.std(0) - 1).abs().max() < 1e-2
    assert val.mean(0).abs().max() > 1e-2 and len(task.info["standardise"]["mean"]) == 6


def test_validation_split_is_stratified_and_fixed():
    a, b = get_task("ucr:GunPoint"), get_task("ucr:gunpoint")  # names match without regard to case
    assert torch.equal(a.splits["val"].labels, b.splits["val"].labels)
    assert torch.equal(stacked(a.splits["val"]), stacked(b.splits["val"]))
    assert sorted(a.splits["val"].labels.ravel().tolist()) == [0] * 5 + [1] * 5


def test_multivariate_and_patches():
    task = get_task("ucr:BasicMotions", patch=1)
    assert task.spec.input_dim == 6 and task.spec.max_tokens == 100 and task.spec.num_classes == 4
    patched = get_task("ucr:BasicMotions", patch=4)
    assert patched.spec.input_dim == 24 and patched.spec.max_tokens == 25
    # A patch is 4 consecutive steps of all 6 channels, time-major.
    assert torch.equal(patched.splits["train"][0][0][0], task.splits["train"][0][0][:4].reshape(-1))


def test_patch_pads_the_tail_with_zeros():
    task = get_task("ucr:GunPoint", patch=7)  # 150 = 21 × 7 + 3
    x, _ = task.splits["test"][0]
    assert x.shape == (22, 7) and task.spec.input_dim == 7
    assert torch.all(x[-1, 3:] == 0) and torch.all(x[-1, :3] != 0)


def test_unequal_length_series_stay_variable_length():
    task = get_task("ucr:JapaneseVowels")
    lengths = {x.shape[0] for x, _ in task.splits["train"]}
    assert len(lengths) > 1 and task.spec.input_dim == 12 and task.spec.max_tokens >= max(lengths)
    x, mask, y = collate([task.splits["train"][i] for i in range(8)])
    assert x.shape[:2] == mask.shape and x.shape[2] == 12 and y.shape == (8, 1)


def test_unknown_name_lists_the_shipped_sets():
    with pytest.raises(FPTError, match="GunPoint.*BasicMotions|BasicMotions.*GunPoint"):
        get_task("ucr:NoSuchSet")


def test_default_patch_keeps_series_within_max_tokens():
    task = get_task("ucr:GunPoint")  # 150 steps → patch 3 → 50 tokens × 3
    assert task.info["patch"] == 3 and task.spec.max_tokens == 50 and task.spec.input_dim == 3
    assert get_task("ucr:GunPoint", max_tokens=150).info["patch"] == 1
