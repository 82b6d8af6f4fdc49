"""Task patches: only the trained tensors, metadata that finds the backbone again, strict and safe loading."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import fpt
from fpt import freeze
from fpt.cli import main
from fpt.shipping.patch import (
    PATCH_FORMAT,
    backbone_bytes_on_disk,
    backbone_fingerprint,
    export,
    from_patch,
    frozen_fingerprint,
    read_patch,
)
from fpt.tasks import collate


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # a tiny model on a busy CPU runs ~10× faster on one thread than on two


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_bert_dir):
    """A finished tiny run and its exported patch."""
    torch.set_num_threads(1)
    cfg = fpt.TrainConfig(
        task="digits",
        backbone="bert",
        backbone_path=tiny_bert_dir,
        steps=20,
        eval_every=10,
        batch_size=16,
        seed=0,
    )
    run = tmp_path_factory.mktemp("run")
    result = fpt.train(cfg, out=run, quiet=True)
    path, patch = export(run, run / "digits.fpt.safetensors")
    return cfg, run, result, path, patch


def test_patch_holds_only_the_trained_tensors(trained_run):
    cfg, run, result, path, patch = trained_run
    model = fpt.build_model(cfg, fpt.get_task("digits"))
    expected = freeze.trained_state(model, fpt.PAPER_GROUPS)
    assert set(patch.tensors) == set(expected)
    assert {n: t.shape for n, t in patch.tensors.items()} == {n: t.shape for n, t in expected.items()}
    trained = load_file(run / "trained.safetensors")  # what training saved: the best-on-validation state
    assert all(torch.equal(trained[n], patch.tensors[n]) for n in trained)
    assert patch.meta["format"] == PATCH_FORMAT and patch.meta["fpt_version"] == fpt.__version__
    assert patch.spec == fpt.get_task("digits").spec and patch.meta["task_spec"]["label_names"][3] == "3"
    assert patch.groups == fpt.PAPER_GROUPS and patch.config.model_dump() == result["config"]
    assert patch.metrics["test_accuracy"] == result["test_accuracy"] and patch.metrics["best_step"] > 0
    assert patch.frozen_sha256 == frozen_fingerprint(model, fpt.PAPER_GROUPS)
    (size,) = struct.unpack("<Q", path.read_bytes()[:8])  # a plain safetensors file: JSON header, raw tensors
    assert json.loads(path.read_bytes()[8 : 8 + size])["__metadata__"]["format"] == PATCH_FORMAT


def test_reloaded_patch_predicts_as_the_trained_run(trained_run):
    cfg, run, result, path, patch = trained_run
    model = from_patch(path, backbone_path=cfg.backbone_path)
    assert not model.training and model.patch.spec.name == "digits"
    test = fpt.evaluate(model, fpt.get_task("digits").splits["test"], 256, torch.device("cpu"))
    assert test == {"accuracy": result["test_accuracy"], "loss": result["test_loss"]}  # bit for bit


def test_fingerprint_is_deterministic_and_covers_only_frozen_weights(trained_run, tiny_bert_dir):
    cfg = trained_run[0]
    a = fpt.build_model(cfg, fpt.get_task("digits"))
    b = fpt.build_model(cfg.model_copy(update={"seed": 5}), fpt.get_task("bit-xor"))
    groups = fpt.PAPER_GROUPS
    assert frozen_fingerprint(a, groups) == frozen_fingerprint(b, groups)  # input layer, head, seed: not frozen
    assert frozen_fingerprint(a, groups) == backbone_fingerprint(a.backbone, groups)
    assert frozen_fingerprint(a, groups) != frozen_fingerprint(a, ("input", "output"))  # norms now frozen
    with torch.no_grad():
        a.backbone.model.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-6
    assert frozen_fingerprint(a, groups) != frozen_fingerprint(b, groups)


def test_patch_refuses_another_backbone(trained_run, tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)  # same architecture, other weights
    config = BertConfig.from_pretrained(trained_run[0].backbone_path)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "other")
    with pytest.raises(fpt.FPTError, match="does not fit this backbone: it was trained on 'bert'.*hashes to"):
        from_patch(trained_run[3], backbone_path=str(tmp_path / "other"))


def test_output_only_patch(tiny_cfg, tmp_path, tiny_bert_dir):
    fpt.train(tiny_cfg(train="output", steps=4, eval_every=2), out=tmp_path, quiet=True)
    _, patch = export(tmp_path)
    assert set(patch.tensors) == {"head.weight", "head.bias"} and patch.groups == ("output",)
    assert (tmp_path / f"{tmp_path.name}.fpt.safetensors").is_file()
    model = from_patch(tmp_path / f"{tmp_path.name}.fpt.safetensors", backbone_path=tiny_bert_dir)  # input by seed
    assert torch.equal(model.head.weight, patch.tensors["head.weight"])


def bad_files(tmp_path, patch_path, tiny_bert_dir):
    data = patch_path.read_bytes()
    files = {
        "missing": None,
        "empty": b"",
        "random bytes": bytes(range(256)) * 4,
        "truncated": data[: len(data) // 2],
        "huge header length": struct.pack("<Q", 1 << 60) + data[8:],
        "header not JSON": struct.pack("<Q", 4) + b"\xff\xfe{[" + data[12:],
        "a model, not a patch": (tiny_bert_dir, "model.safetensors"),
        "JSON file": b'{"inputs": [[1, 2]]}',
    }
    out = {}
    for name, content in files.items():
        path = tmp_path / f"{name.replace(' ', '-')}.fpt.safetensors"
        if isinstance(content, tuple):
            path = Path(content[0]) / content[1]
        elif content is not None:
            path.write_bytes(content)
        out[name] = path
    # a well-formed safetensors file that claims to be a patch but has a malformed spec
    meta = load_file(patch_path)
    forged = tmp_path / "forged.fpt.safetensors"
    save_file(meta, forged, metadata={"format": PATCH_FORMAT, "config": "{}", "task_spec": '{"name": 1}',
                                      "train_groups": '["input"]', "frozen_sha256": '"00"'})  # fmt: skip
    out["forged spec"] = forged
    nan = tmp_path / "nan.fpt.safetensors"
    poisoned = {k: v.clone() for k, v in meta.items()}
    next(iter(poisoned.values())).view(-1)[0] = float("nan")
    header = json.loads(patch_path.read_bytes()[8 : 8 + struct.unpack("<Q", patch_path.read_bytes()[:8])[0]])
    save_file(poisoned, nan, metadata=header["__metadata__"])
    out["nan weights"] = nan
    return out


def test_corrupt_or_foreign_patch_is_one_clear_error(trained_run, tmp_path, tiny_bert_dir, capsys):
    for name, path in bad_files(tmp_path, trained_run[3], tiny_bert_dir).items():
        with pytest.raises(fpt.FPTError) as err:
            read_patch(path)
        assert str(path) in str(err.value) or name == "missing", (name, err.value)
        assert main(["load", str(path)]) == 2, name
        message = capsys.readouterr().err
        assert message.startswith("fpt: error: ") and message.count("\n") == 1, (name, message)


def test_cli_export_and_load(trained_run, tmp_path, capsys):
    cfg, run, result, _, _ = trained_run
    out = tmp_path / "d.fpt.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "tensors" in capsys.readouterr().out
    task = fpt.get_task("digits")
    examples = [task.splits["test"][i] for i in range(4)]
    (tmp_path / "in.json").write_text(json.dumps({"inputs": [x.tolist() for x, _ in examples]}))
    assert main(["load", str(out), "--inputs", str(tmp_path / "in.json")]) == 2  # the backbone is the user's to name
    assert "fpt does not read paths named inside a patch" in capsys.readouterr().err
    load = ["load", str(out), "--backbone-path", cfg.backbone_path]
    assert main([*load, "--inputs", str(tmp_path / "in.json")]) == 0
    captured = capsys.readouterr()
    predicted = json.loads(captured.out)
    x, mask, _ = collate(examples)
    with torch.no_grad():
        expected = from_patch(out, backbone_path=cfg.backbone_path)(x, mask).argmax(-1).tolist()
    assert predicted["predictions"] == expected and predicted["labels"] == [[str(c) for c in r] for r in expected]
    assert "backbone verified" in captured.err
    (tmp_path / "bad.json").write_text(json.dumps({"inputs": [[[0.1, 0.2, float("nan"), 0.0]] * 16]}))
    assert main([*load, "--inputs", str(tmp_path / "bad.json")]) == 2
    assert "inputs[0]: values must be finite" in capsys.readouterr().err


def test_export_needs_a_finished_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["export", str(tmp_path / "run")]) == 2
    assert "has not finished" in capsys.readouterr().err and not list(tmp_path.rglob("*.safetensors"))
    assert main(["export", str(tmp_path / "nope")]) == 2


def test_minilm_patch_is_under_one_percent_of_the_backbone(tmp_path):
    """The real shipped backbone: one training step on bit-xor, exported; the patch is < 1% of minilm on disk."""
    cfg = fpt.TrainConfig(task="bit-xor", steps=1, eval_every=1, task_args={"val_size": 8, "test_size": 8})
    fpt.train(cfg, out=tmp_path, quiet=True)
    _, patch = export(tmp_path, tmp_path / "xor.fpt.safetensors")
    backbone = backbone_bytes_on_disk(patch.meta["backbone_source"])
    assert backbone and backbone > 80e6
    assert patch.nbytes / backbone < 0.01, (patch.nbytes, backbone)


def test_metadata_is_read_by_safetensors_and_bad_files_are_one_line(tmp_path):
    from fpt.shipping.patch import read_metadata, save_safetensors

    path = tmp_path / "x.safetensors"
    save_safetensors(path, {"w": torch.zeros(2)}, {"format": "fpt-test/1", "step": 3})
    meta = read_metadata(path, "fpt-test/1")
    assert meta.pop("sha256") and meta == {"format": "fpt-test/1", "step": 3}  # with the content digest
    for content, message in ((b"garbage-not-safetensors", "not a safetensors file"), (b"", "not a safetensors file")):
        path.write_bytes(content)
        with pytest.raises(fpt.FPTError, match=message) as err:
            read_metadata(path, "fpt-test/1")
        assert "\n" not in str(err.value)
    with pytest.raises(fpt.FPTError, match="file not found"):
        read_metadata(tmp_path / "missing.safetensors", "fpt-test/1")


@pytest.mark.parametrize("overrides", [{"layers": 0}, {"model": "transformer", "init": "random", "layers": 1}])
def test_truncated_backbones_train_and_reload(tiny_cfg, tmp_path, overrides):
    """Tan et al.'s ablations, no transformer blocks and one trained block from scratch: they train, count only the
    blocks kept, and their patch rebuilds the same truncated model."""
    cfg = tiny_cfg(task="digits", task_args={}, steps=6, eval_every=3, **overrides)
    result = fpt.train(cfg, out=tmp_path, quiet=True)
    model = fpt.build_model(cfg, fpt.get_task("digits"))
    assert len(model.backbone.layers()) == cfg.layers
    assert result["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    path, _ = export(tmp_path, tmp_path / "ablation.fpt.safetensors")
    reloaded = from_patch(path, backbone_path=cfg.backbone_path)
    assert len(reloaded.backbone.layers()) == cfg.layers
    test = fpt.evaluate(reloaded, fpt.get_task("digits").splits["test"], 256, torch.device("cpu"))
    assert test == {"accuracy": result["test_accuracy"], "loss": result["test_loss"]}
