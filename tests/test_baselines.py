"""Every model of the registry (fpt and the baselines) in the one loop: parameter groups, shapes, result files."""

import json

import pytest
import torch

import fpt
from fpt import freeze
from fpt.registry import MODELS, trains_all
from fpt.tasks import collate
from fpt.train import build_model

MODEL_NAMES = [e.name for e in MODELS.entries() if not e.tags.get("fitted")]  # classical ones: test_timeseries
TINY = {
    "bit-xor": {"train_size": 256, "val_size": 32, "test_size": 32},
    "listops": {"train_size": 40, "val_size": 8, "test_size": 8, "max_depth": 3, "min_length": 5, "max_length": 40},
    "digits": {},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models: one thread beats two on a busy 2-core machine


@pytest.mark.parametrize("task_name", ["bit-xor", "listops"])  # features with 5 outputs, and token ids
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_groups_partition_and_logits_shape(tiny_cfg, name, task_name):
    cfg = tiny_cfg(model=name, task=task_name, task_args=TINY[task_name])
    task = fpt.get_task(cfg.task, **cfg.task_args)
    model = build_model(cfg, task)
    named = freeze.named_groups(model)  # raises unless every parameter is in exactly one group
    trained = set(freeze.parse_groups(cfg.train))
    for group, members in named.items():
        assert all(p.requires_grad == (group in trained) for p in members.values()), group
    assert named["output"], "every model has a trained head"
    x, mask, y = collate([task.splits["val"][i] for i in range(3)])
    assert model(x, mask).shape == (3, y.shape[1], task.spec.num_classes)


@pytest.fixture(scope="module")
def fpt_result_fields(tiny_bert_dir, tmp_path_factory):
    cfg = fpt.TrainConfig(
        task="bit-xor", task_args=TINY["bit-xor"], backbone="bert", backbone_path=tiny_bert_dir, steps=2, eval_every=2
    )
    out = tmp_path_factory.mktemp("fpt-run")
    fpt.train(cfg, out=out, quiet=True)
    return set(json.loads((out / "result.json").read_text()))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains_on_bit_xor_and_digits_with_the_same_result_fields(
    tiny_cfg, tmp_path, name, fpt_result_fields
):
    for task_name in ("bit-xor", "digits"):
        cfg = tiny_cfg(model=name, task=task_name, task_args=TINY[task_name], steps=4, eval_every=2)
        fpt.train(cfg, out=tmp_path / task_name, quiet=True)
        saved = json.loads((tmp_path / task_name / "result.json").read_text())
        assert set(saved) == fpt_result_fields
        assert saved["model"] == name and saved["steps_run"] == 4 and 0.0 <= saved["test_accuracy"] <= 1.0
        assert saved["trainable_params"] > 0 and (saved["config"]["train"] == "all") == trains_all(name)


def test_linear_learns_digits():
    cfg = fpt.TrainConfig(model="linear", task="digits", steps=300, eval_every=100, seed=0)
    assert fpt.train(cfg, quiet=True)["test_accuracy"] > 0.85


def test_transformer_is_fpt_with_every_weight_trained(tiny_cfg):
    cfg = tiny_cfg(model="transformer")
    assert cfg.train == "all"
    model = build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))
    assert isinstance(model, fpt.FPT) and all(p.requires_grad for p in model.parameters())
    with pytest.raises(fpt.FPTError, match="model 'transformer' trains every weight; leave out train"):
        fpt.config.make_config({"model": "transformer", "train": "input,output"})
    assert tiny_cfg(model="lstm", train="all").train == "all"


def test_baseline_sizes_come_from_the_config(tiny_cfg):
    task = fpt.get_task("bit-xor", **TINY["bit-xor"])
    lstm = build_model(tiny_cfg(model="lstm", width=8, lstm_layers=2), task)
    assert lstm.lstm.hidden_size == 8 and lstm.lstm.num_layers == 2
    mlp = build_model(tiny_cfg(model="mlp", width=8, mlp_layers=3), task)
    assert [layer.out_features for layer in mlp.hidden] == [8, 8, 8]
    features = build_model(tiny_cfg(model="random-features"), task)
    assert features.hidden[0].out_features == 32  # default: the backbone's width (tiny bert: 32)
    with pytest.raises(fpt.FPTError, match="unknown config key 'lstm_hidden'"):
        fpt.config.make_config({"model": "lstm", "lstm_hidden": 8})


def test_random_features_stay_frozen(tiny_cfg):
    cfg = tiny_cfg(model="random-features", steps=10)
    task = fpt.get_task(cfg.task, **cfg.task_args)
    model = build_model(cfg, task)
    assert freeze.count(model)["trainable_params"] == sum(p.numel() for p in model.head.parameters())
    result = fpt.train(cfg, quiet=True, task=task)
    assert result["train_groups"] == list(fpt.PAPER_GROUPS)  # nothing but the head is in them


def test_spectral_features():
    from fpt.baselines.spectral import dct_matrix

    basis = dct_matrix(7)
    assert torch.allclose(basis @ basis.T, torch.eye(7), atol=1e-5)  # orthonormal
    cfg = fpt.TrainConfig(model="fourier", task="bit-xor")
    model = build_model(cfg, fpt.get_task("bit-xor", train_size=8, val_size=8, test_size=8))
    x = torch.rand(1, 10, 1)
    shifted = torch.roll(x, 3, dims=1)
    assert torch.allclose(model.features(x), model.features(shifted), atol=1e-5)  # magnitudes ignore a cyclic shift
