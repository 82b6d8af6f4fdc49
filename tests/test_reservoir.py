"""The reservoir (--train output --cache-features): frozen features cached once, the head trained in the one loop."""

import json

import pytest
import torch
from torch.utils.data import Dataset

import fpt
from fpt.cache import HeadOnly, features_of, reservoir
from fpt.train import build_model, resolve_device


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_cached_training_matches_uncached_output_training(tiny_cfg, tmp_path):
    """Without dropout the backbone computes the same features in train and eval mode, so the head sees the same
    numbers, in the same order, cached or not: the two runs agree up to float rounding."""
    base = dict(train="output", dropout=0.0, steps=30, eval_every=10, lr=1e-2)
    uncached = fpt.train(tiny_cfg(**base), quiet=True)
    cached = fpt.train(tiny_cfg(**base, cache_features=True), out=tmp_path, quiet=True)
    assert cached["test_accuracy"] == pytest.approx(uncached["test_accuracy"], abs=1e-9)
    assert cached["val_loss"] == pytest.approx(uncached["val_loss"], rel=1e-4)
    assert cached["best_step"] == uncached["best_step"]
    keys = ("trainable_params", "total_params", "backbone_source", "train_groups")
    assert {k: cached[k] for k in keys} == {k: uncached[k] for k in keys}
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["cache_features"] is True
    assert saved["task_info"]["reservoir"]["feature_shape"] == [5, 32]  # bit-xor reads 5 tokens of tiny bert's 32
    assert set(saved["task_info"]["reservoir"]["cache_seconds"]) == {"train", "val", "test"}


def test_head_only_is_the_model_under_the_same_names(tiny_cfg):
    cfg = tiny_cfg(train="output", cache_features=True)
    task = fpt.get_task(cfg.task, **cfg.task_args)
    model = build_model(cfg, task)
    cached_task, head = reservoir(model, task, 16, resolve_device("cpu"))
    assert isinstance(head, HeadOnly) and dict(head.named_parameters()).keys() == dict(model.named_parameters()).keys()
    assert fpt.freeze.trained_state(head, ["output"]).keys() == {"head.weight", "head.bias"}
    features, y = cached_task.splits["val"][0]
    x, _ = task.splits["val"][0]
    mask = torch.ones(1, x.shape[0], dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(head(features[None], mask), model(x[None], mask), atol=1e-5)


class Augmenting(Dataset):
    augment = True

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i):
        noise = torch.rand(3, 1) if self.augment else torch.zeros(3, 1)
        return noise + i, torch.tensor([0])


def test_cache_turns_augmentation_off(tiny_cfg):
    model = build_model(tiny_cfg(), fpt.get_task("bit-xor", train_size=4, val_size=4, test_size=4)).eval()
    split = Augmenting()
    a, b = (features_of(model, split, 2, torch.device("cpu")).features for _ in range(2))
    assert torch.equal(a, b) and split.augment  # the caller's split is untouched


def test_cache_features_needs_output_only_and_a_feature_model(tiny_cfg):
    with pytest.raises(fpt.FPTError, match="cache_features trains the head alone .* needs train: output"):
        fpt.config.make_config({"cache_features": True})
    with pytest.raises(fpt.FPTError, match="cache_features needs a model with forward_features"):
        fpt.train(tiny_cfg(model="random-features", train="output", cache_features=True), quiet=True)
