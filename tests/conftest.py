"""Shared fixtures: tiny random backbones saved as real model folders, so tests use the real loading path."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A tiny Llama (grouped-query attention: 4 heads, 2 key/value heads) with RMSNorm weights away from 1."""
    from transformers import LlamaConfig, LlamaModel

    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = LlamaModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_cfg(tiny_bert_dir):
    """A TrainConfig factory on the tiny BERT: short runs that exercise the whole loop in a second or two."""
    from fpt import TrainConfig

    def make(**overrides) -> TrainConfig:
        values = dict(
            task="bit-xor",
            task_args={"train_size": 512, "val_size": 64, "test_size": 64},
            backbone="bert",
            backbone_path=tiny_bert_dir,
            steps=20,
            eval_every=10,
            batch_size=16,
            seed=0,
        )
        return TrainConfig(**{**values, **overrides})

    return make
