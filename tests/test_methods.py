"""Methods (--method): each trains its own tensors through fpt.freeze's one rule, resumes bit-exactly, exports a patch
that reloads to the same test metrics, and counts what a hand count of a tiny model gives."""

from __future__ import annotations

import pytest
import torch
from test_resume import assert_same_run, kill_after, resumable_config, run_record
from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel

import fpt
from fpt import freeze
from fpt.cli import main
from fpt.registry import METHODS
from fpt.results import read_curve
from fpt.shipping.patch import export, from_patch

METHOD_NAMES = [e.name for e in METHODS.entries()]
D, LAYERS, FF, POSITIONS, RANK, PROMPT = 32, 2, 64, 128, 8, 16  # the tiny BERT of conftest; LoRA's rank, prompt tokens
IO = (1 * D + D) + (D * 2 + 2)  # bit-xor: a 1-feature input layer and a 2-class head
NORMS = 2 * LAYERS + 1  # the embeddings' LayerNorm and two per layer
# What each method trains on the tiny BERT, counted by hand from its architecture:
HAND_COUNT = {
    "fpt": IO + NORMS * 2 * D + POSITIONS * D,  # layer norms and the position table
    "lora": IO + LAYERS * 2 * RANK * (D + D),  # B (D × r) and A (r × D) beside query and value
    "ia3": IO + LAYERS * (D + D + D + FF),  # key, value outputs; attention.output.dense, output.dense inputs (peft's)
    "ln-tuning": IO + NORMS * 2 * D,  # a copy of every LayerNorm
    "bitfit": IO + D + LAYERS * (4 * D + FF + D + 2 * D),  # q, k, v, o; intermediate, output; 2 norms; embeddings'
    "prompt": IO + PROMPT * D,  # the virtual tokens
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_every_method_is_counted_by_hand():
    assert set(HAND_COUNT) == set(METHOD_NAMES)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_one_rule_counts_what_the_method_trains(tiny_cfg, method):
    cfg = tiny_cfg(method=method)
    model = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))
    groups = freeze.parse_groups(cfg.train)
    named = freeze.named_groups(model)  # every parameter in exactly one group, adapters included
    assert sum(len(g) for g in named.values()) == len(list(model.parameters()))
    counts = freeze.count(model)
    assert counts["trainable_params"] == HAND_COUNT[method]
    trained = freeze.trained_state(model, groups)
    assert sum(t.numel() for t in trained.values()) == HAND_COUNT[method]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trained)
    in_optimizer = sum(p.numel() for g in freeze.optimizer_groups(model, groups, 0.0) for p in g["params"])
    assert in_optimizer == HAND_COUNT[method]
    assert ("adapter" in groups) == (method != "fpt") and bool(named["adapter"]) == (method != "fpt")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_resumes_bit_exactly_and_its_patch_reloads(tiny_bert_dir, monkeypatch, tmp_path, method):
    cfg = resumable_config(tiny_bert_dir, method=method, steps=12, lora_dropout=0.1 if method == "lora" else 0.0)
    reference = fpt.train(cfg, out=tmp_path / "ref", quiet=True)
    kill_after(monkeypatch, 7)  # resumes from step 4's checkpoint
    with pytest.raises(KeyboardInterrupt):
        fpt.train(cfg, out=tmp_path / "run", quiet=True)
    monkeypatch.undo()
    fpt.train(cfg, out=tmp_path / "run", quiet=True, resume=True)
    assert_same_run(run_record(tmp_path / "run"), run_record(tmp_path / "ref"))
    assert reference["trainable_params"] == HAND_COUNT[method]
    path, patch = export(tmp_path / "ref")
    assert sum(t.numel() for t in patch.tensors.values()) == HAND_COUNT[method]
    model = from_patch(path, backbone_path=tiny_bert_dir)
    test = fpt.evaluate(model, fpt.get_task(cfg.task, **cfg.task_args).splits["test"], 256, torch.device("cpu"))
    assert test == {"accuracy": reference["test_accuracy"], "loss": reference["test_loss"]}  # bit for bit


def test_adapters_change_what_the_bert_body_computes(tiny_cfg):
    """fpt's own BERT forward goes through the modules a method wraps: a LoRA update changes the output."""
    cfg = tiny_cfg(method="lora")
    model = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args)).eval()
    x, mask = torch.randn(3, 10, 1), torch.ones(3, 10, dtype=torch.bool)
    before = model(x, mask)
    with torch.no_grad():
        for p in freeze.named_groups(model)["adapter"].values():
            p.add_(0.5)  # B starts at zero: the update is nonzero only now
    assert not torch.allclose(model(x, mask), before)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"method": "lora", "train": "input,output,attention"}, "already adapts the attention group"),
        ({"method": "ln-tuning", "train": "input,output,layernorm"}, "already adapts the layernorm group"),
        ({"method": "ia3", "lora_rank": 4}, "lora_rank: not an option of method 'ia3'"),
        ({"method": "lora", "prompt_tokens": 4}, "prompt_tokens: not an option of method 'lora'"),
        ({"method": "prompt", "prompt_tokens": 120}, "sequence of 130 tokens is longer than backbone 'bert' covers"),
        ({"train": "input,output,adapter"}, "adapter holds a method's tensors"),
        ({"method": "lora", "model": "lstm"}, "works in model fpt's pretrained backbone"),
        ({"method": "lora", "train": "all"}, "takes no method 'lora'"),
        ({"method": "prefix"}, "unknown method 'prefix'; choose from: .*lora"),
        ({"method": "lora", "targets": "nothing_here"}, "method 'lora' on backbone 'bert'"),
    ],
)
def test_bad_combinations_are_one_line(tiny_cfg, overrides, message):
    with pytest.raises((fpt.FPTError, ValueError), match=message):
        cfg = tiny_cfg(**overrides)
        fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))


def test_method_with_layer_norms_and_positions(tiny_cfg):
    cfg = tiny_cfg(method="lora", train="input,output,layernorm,positional")
    assert cfg.train == "input,output,layernorm,positional,adapter"
    model = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))
    assert freeze.count(model)["trainable_params"] == HAND_COUNT["lora"] + HAND_COUNT["fpt"] - IO


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_prompt_tokens_come_before_the_inputs_and_are_not_read_out(tiny_cfg, readout):
    """Prompt tuning: the body reads [prompt, inputs]; the read-out is over the inputs' positions alone, padding
    changes nothing, and the prompt changes what the body computes."""
    n_bits = 5 if readout == "last" else 1  # the mean reads one token: one XOR bit
    cfg = tiny_cfg(method="prompt", prompt_tokens=3, readout=readout, task_args={"n_bits": n_bits, "train_size": 64})
    model = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args)).eval()
    x, mask = torch.randn(2, 2 * n_bits, 1), torch.ones(2, 2 * n_bits, dtype=torch.bool)
    prompt = model.method.prefix(model.backbone)
    assert prompt.shape == (3, D)
    embeds = torch.cat([prompt.expand(2, -1, -1), model.input_layer(x)], 1)
    hidden = model.backbone.model(inputs_embeds=embeds).last_hidden_state[:, 3:]  # transformers' own forward
    expected = hidden[:, -n_bits:] if readout == "last" else hidden.mean(1, keepdim=True)
    torch.testing.assert_close(model.forward_features(x, mask), expected, rtol=1e-5, atol=1e-5)
    padded, padded_mask = torch.cat([x, torch.zeros(2, 4, 1)], 1), torch.cat([mask, torch.zeros(2, 4, dtype=bool)], 1)
    torch.testing.assert_close(model(padded, padded_mask), model(x, mask), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        prompt.add_(torch.randn_like(prompt))  # not a constant: the embeddings' LayerNorm would remove it
    assert not torch.allclose(model(x, mask), model.forward_head(expected), atol=1e-4)


def test_prompt_tokens_follow_a_decoders_bos(tiny_cfg, decoder_dirs):
    task_args = {"n_bits": 3, "train_size": 64}
    cfg = tiny_cfg(
        method="prompt", prompt_tokens=2, backbone="llama", backbone_path=decoder_dirs["llama"], task_args=task_args
    )
    model = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args)).eval()
    backbone = model.backbone
    x, mask = torch.randn(2, 6, 1), torch.ones(2, 6, dtype=torch.bool)
    bos = backbone.token_embeddings()[backbone.bos_token].expand(2, 1, -1)
    embeds = torch.cat([bos, model.method.prefix(backbone).expand(2, -1, -1), model.input_layer(x)], 1)
    expected = backbone.model(inputs_embeds=embeds).last_hidden_state[:, -3:]
    torch.testing.assert_close(model.forward_features(x, mask), expected, rtol=1e-5, atol=1e-5)


def test_default_config_keeps_its_identity():
    """A run id is made of the fields set away from their defaults: the method fields leave old runs' ids alone."""
    from fpt.config import identity

    assert not {"method", "lora_rank", "lora_alpha", "lora_dropout", "prompt_tokens", "targets", "unfreeze"} & set(
        identity(fpt.TrainConfig().model_dump())
    )


@pytest.fixture(scope="module")
def decoder_dirs(tmp_path_factory) -> dict[str, str]:
    torch.manual_seed(0)
    small = dict(vocab_size=64, max_position_embeddings=64)
    models = {
        "llama": LlamaModel(LlamaConfig(hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS,
                                        num_attention_heads=4, num_key_value_heads=2, **small)),
        "gpt2": GPT2Model(GPT2Config(n_embd=D, n_layer=LAYERS, n_head=4, n_positions=64, vocab_size=64)),
    }  # fmt: skip
    out = {}
    for name, model in models.items():
        out[name] = str(tmp_path_factory.mktemp(name))
        model.save_pretrained(out[name])
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if m != "fpt"])
def test_methods_on_decoder_families(tiny_cfg, decoder_dirs, family, method):
    if family == "llama" and method == "bitfit":  # Llama has no bias terms: BitFit has nothing to train
        with pytest.raises(fpt.FPTError, match="finds nothing to train in backbone 'llama'"):
            cfg = tiny_cfg(method=method, backbone=family, backbone_path=decoder_dirs[family])
            fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))
        return
    cfg = tiny_cfg(method=method, backbone=family, backbone_path=decoder_dirs[family], steps=4, eval_every=2)
    result = fpt.train(cfg, quiet=True)
    model = fpt.build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))
    adapter = freeze.named_groups(model)["adapter"]
    assert adapter and result["trainable_params"] == IO + sum(p.numel() for p in adapter.values())


def test_cli_trains_a_method(tiny_bert_dir, tmp_path, capsys):
    args = ["train", "--task", "bit-xor", "--task-args", "{train_size: 64, val_size: 16, test_size: 16}"]
    args += ["--backbone", "bert", "--backbone-path", tiny_bert_dir, "--steps", "4", "--eval-every", "2"]
    assert main([*args, "--method", "lora", "--lora-rank", "4", "--out", str(tmp_path), "--quiet"]) == 0
    assert f"{IO + LAYERS * 2 * 4 * 2 * D:,}/" in capsys.readouterr().out
    assert (tmp_path / "moved.json").is_file()
    assert main(["list", "methods"]) == 0
    assert "lora" in capsys.readouterr().out


def test_ln_tuning_is_fpt_on_a_rotary_decoder(tiny_cfg, decoder_dirs, tmp_path):
    """Llama has no position table, so FPT's layer norms and positions are its RMSNorm weights alone: LN tuning trains
    the same tensors from the same start, and the two runs agree to the last digit (why the methods comparison runs
    smollm2's LN tuning on one UCR set only). On BERT they differ: FPT also trains the position table."""
    runs = {}
    for method in ("fpt", "ln-tuning"):
        cfg = tiny_cfg(method=method, backbone="llama", backbone_path=decoder_dirs["llama"], steps=6, eval_every=2)
        result = fpt.train(cfg, quiet=True, out=tmp_path / method)
        curve = [{k: v for k, v in row.items() if k != "train_seconds"} for row in read_curve(tmp_path / method)]
        runs[method] = (result["trainable_params"], curve, result["test_loss"], result["test_accuracy"])
    assert runs["fpt"] == runs["ln-tuning"]
    bert = {m: freeze.count(fpt.build_model(c, fpt.get_task(c.task, **c.task_args)))["trainable_params"]
            for m, c in ((m, tiny_cfg(method=m)) for m in ("fpt", "ln-tuning"))}  # fmt: skip
    assert bert["fpt"] - bert["ln-tuning"] == POSITIONS * D
