"""FPT inside peft: `get_peft_model(model, fpt.peft_config(model))` on tiny transformers models trains exactly the
paper's tensors and round-trips through peft's adapter files; an fpt run exports as a peft adapter folder that peft
and fpt both load, with the backbone fingerprint checked."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

import fpt
from fpt.cli import main
from fpt.shipping.patch import PEFT_META_FILE, from_patch, read_patch
from fpt.shipping.peft_adapter import export_adapter
from fpt.tasks import collate

D, LAYERS, POSITIONS, CLASSES, VOCAB = 16, 2, 32, 3, 64
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported layer type")  # peft's note on norms (no in/out features)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=2 * D, max_position_embeddings=POSITIONS, num_labels=CLASSES)  # fmt: skip
    return BertForSequenceClassification(config)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=LAYERS, n_head=2, n_positions=POSITIONS,
                        num_labels=CLASSES, pad_token_id=0)  # fmt: skip
    return GPT2ForSequenceClassification(config)


def tiny_decoder(kind: str):
    import transformers

    config = getattr(transformers, f"{kind}Config")(
        vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=2 * D, max_position_embeddings=POSITIONS, num_labels=CLASSES, pad_token_id=0,
    )  # fmt: skip
    return getattr(transformers, f"{kind}ForSequenceClassification")(config)


NORMS = 2 * LAYERS + 1  # two per block and the embeddings' (BERT) or the final one (decoders)
# family → (tiny model, the FPT tensors counted by hand: norms, position table, classifier head)
MODELS = {
    "bert": (tiny_bert, NORMS * 2 * D + POSITIONS * D + (D * CLASSES + CLASSES)),
    "gpt2": (tiny_gpt2, NORMS * 2 * D + POSITIONS * D + D * CLASSES),  # score has no bias
    "llama": (lambda: tiny_decoder("Llama"), NORMS * D + D * CLASSES),  # RMSNorm: weight only; rotary: no table
    "mistral": (lambda: tiny_decoder("Mistral"), NORMS * D + D * CLASSES),
    "qwen2": (lambda: tiny_decoder("Qwen2"), NORMS * D + D * CLASSES),
}


def build(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return MODELS[family][0]().eval()


def batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (4, 10), generator=generator)  # no pad id: every token is real
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("family", MODELS)
def test_peft_config_trains_exactly_the_fpt_tensors(family):
    model = get_peft_model(build(family), fpt.peft_config(build(family)))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == MODELS[family][1]
    assert all(".ln_tuning_layers." in n or ".modules_to_save." in n for n in trainable)  # copies train, not originals
    norms = [n for n in trainable if ".ln_tuning_layers." in n]
    assert len({n.rsplit(".ln_tuning_layers.", 1)[0] for n in norms}) == NORMS


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_peft_round_trip_gives_the_same_outputs(family, tmp_path):
    """A peft user's round trip: get_peft_model with the FPT config, a training step, save_pretrained,
    PeftModel.from_pretrained on a fresh base from the same seed: the same outputs."""
    model = get_peft_model(build(family), fpt.peft_config(build(family)))
    inputs, labels = batch()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model(**inputs, labels=labels).loss.backward()
    optimizer.step()
    model.eval().save_pretrained(tmp_path)

    loaded = PeftModel.from_pretrained(build(family), tmp_path).eval()
    with torch.no_grad():
        trained, reloaded, untrained = (m(**inputs).logits for m in (model, loaded, build(family)))
    torch.testing.assert_close(reloaded, trained, rtol=0, atol=0)
    assert not torch.allclose(trained, untrained)  # the step moved it, and the adapter carries the move
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert sum(t.numel() for t in saved.values()) == MODELS[family][1]  # only the trained tensors
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LN_TUNING"


def test_peft_config_options_and_refusals():
    config = fpt.peft_config(build("bert"), train="output,layernorm", task_type="SEQ_CLS")
    assert config.modules_to_save == ["classifier"] and config.task_type == "SEQ_CLS"
    with pytest.raises(fpt.FPTError, match="must include layernorm"):
        fpt.peft_config(build("bert"), train="output,positional")
    with pytest.raises(fpt.FPTError, match="neither a transformers model nor an fpt model"):
        fpt.peft_config(torch.nn.Linear(2, 2))
    from transformers import T5Config, T5ForSequenceClassification  # fpt's t5 family is the encoder alone

    t5 = T5ForSequenceClassification(T5Config(vocab_size=VOCAB, d_model=D, d_kv=8, d_ff=2 * D, num_layers=1,
                                              num_heads=2, num_labels=CLASSES))  # fmt: skip
    with pytest.raises(fpt.FPTError, match="not built as fpt's t5 family's.*in no group"):
        fpt.peft_config(t5)
    from transformers import ViTConfig, ViTForImageClassification  # ViT's position table is a bare Parameter

    vit = ViTForImageClassification(ViTConfig(hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=2 * D, image_size=8, patch_size=4))  # fmt: skip
    with pytest.raises(fpt.FPTError, match="position_embeddings shares its module with parameters that stay frozen"):
        fpt.peft_config(vit)
    assert fpt.peft_config(vit, train="layernorm,output").modules_to_save == ["classifier"]


# ---- an fpt run as a peft adapter folder ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir):
    torch.set_num_threads(1)
    cfg = fpt.TrainConfig(task="digits", backbone="bert", backbone_path=tiny_bert_dir, steps=4, eval_every=2,
                          batch_size=16, seed=0)  # fmt: skip
    folder = tmp_path_factory.mktemp("run")
    fpt.train(cfg, out=folder, quiet=True)
    out, patch = export_adapter(folder, backbone_path=tiny_bert_dir)
    return cfg, folder, out, patch


def digits_batch():
    task = fpt.get_task("digits")
    x, mask, _ = collate([task.splits["test"][i] for i in range(8)])
    return x, mask


def test_fpt_run_exports_as_a_peft_adapter_that_peft_and_fpt_load(run):
    cfg, folder, out, patch = run
    assert out == folder / f"{folder.name}.peft"
    assert {"adapter_config.json", "adapter_model.safetensors", PEFT_META_FILE} <= {p.name for p in out.iterdir()}
    trained = load_file(folder / "trained.safetensors")
    assert patch.tensors.keys() == trained.keys() and all(torch.equal(patch.tensors[n], trained[n]) for n in trained)
    assert patch.groups == fpt.PAPER_GROUPS and patch.spec.name == "digits"
    assert sum(t.numel() for t in load_file(out / "adapter_model.safetensors").values()) == patch.params

    x, mask = digits_batch()
    with torch.no_grad():
        by_fpt = from_patch(out, backbone_path=cfg.backbone_path)(x, mask)
        by_peft = PeftModel.from_pretrained(fpt.build_model(cfg, fpt.get_task("digits")), out).eval()(x, mask)
        untrained = fpt.build_model(cfg, fpt.get_task("digits")).eval()(x, mask)
    torch.testing.assert_close(by_peft, by_fpt, rtol=0, atol=0)
    assert not torch.allclose(by_fpt, untrained)


def test_peft_folder_refuses_another_backbone_and_edits(run, tmp_path):
    from transformers import BertConfig, BertModel

    cfg, _, out, _ = run
    torch.manual_seed(1)  # same architecture, other weights
    BertModel(BertConfig.from_pretrained(cfg.backbone_path), add_pooling_layer=False).save_pretrained(tmp_path / "b")
    with pytest.raises(fpt.FPTError, match="does not fit this backbone: it was trained on 'bert'.*hashes to"):
        from_patch(out, backbone_path=str(tmp_path / "b"))
    edited = shutil.copytree(out, tmp_path / "edited.peft")
    tensors = load_file(edited / "adapter_model.safetensors")
    next(iter(tensors.values())).view(-1)[0] += 1
    save_file(tensors, edited / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(fpt.FPTError, match="does not match its sha256 digest"):
        read_patch(edited)
    with pytest.raises(fpt.FPTError, match="folder without fpt_patch.json"):
        read_patch(tmp_path / "b")


def test_cli_exports_and_loads_peft_folders(run, tmp_path, capsys):
    cfg, folder, _, _ = run
    out = tmp_path / "digits.peft"
    assert main(["export", str(folder), "--format", "peft", "--out", str(out)]) == 2  # the backbone is the user's
    assert "--backbone-path" in capsys.readouterr().err
    export = ["export", str(folder), "--format", "peft", "--out", str(out), "--backbone-path", cfg.backbone_path]
    assert main(export) == 0 and "peft adapter" in capsys.readouterr().out
    assert main(export) == 2 and "already exists" in capsys.readouterr().err
    assert main([*export, "--overwrite"]) == 0
    assert main(["load", str(out), "--backbone-path", cfg.backbone_path]) == 0
    assert "backbone verified" in capsys.readouterr().out
    lora = fpt.TrainConfig(**{**cfg.model_dump(), "method": "lora", "train": "input,output", "steps": 2})
    fpt.train(lora, out=tmp_path / "lora", quiet=True)
    assert main(["export", str(tmp_path / "lora"), "--format", "peft", "--backbone-path", cfg.backbone_path]) == 2
    assert "writes runs of method fpt, not 'lora'" in capsys.readouterr().err
