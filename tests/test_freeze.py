import pytest
import torch
from safetensors.torch import load_file

import fpt
from fpt import freeze
from fpt.train import build_model


def test_parse_groups():
    assert freeze.parse_groups("input,output,layernorm,positional") == fpt.PAPER_GROUPS
    assert freeze.parse_groups("output, input") == ("input", "output")  # canonical order
    assert freeze.parse_groups("all") == fpt.GROUPS
    with pytest.raises(fpt.FPTError, match="unknown parameter group 'attn'.*attention"):
        freeze.parse_groups("input,attn")


@pytest.mark.parametrize(
    "train, groups",
    [
        ("input,output,layernorm,positional", fpt.PAPER_GROUPS),
        ("output", ("output",)),
        ("all", fpt.GROUPS),
    ],
)
def test_one_rule_decides_what_trains(tiny_cfg, train, groups):
    cfg = tiny_cfg(train=train)
    model = build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args))
    named = freeze.named_groups(model)
    expected = sum(p.numel() for g in groups for p in named[g].values())
    counts = freeze.count(model)
    assert counts["trainable_params"] == expected
    assert counts["total_params"] == sum(p.numel() for p in model.parameters())
    trained = freeze.trained_state(model, groups)
    assert sum(t.numel() for t in trained.values()) == expected
    in_optimizer = sum(p.numel() for g in freeze.optimizer_groups(model, groups, 0.01) for p in g["params"])
    assert in_optimizer == expected
    for name, p in model.named_parameters():
        assert p.requires_grad == (name in trained)
    if train == "output":
        assert set(trained) == {"head.weight", "head.bias"}
    if train == "all":
        assert counts["trainable_params"] == counts["total_params"]


def test_groups_partition_minilm():
    backbone = fpt.get_backbone("minilm")
    model = fpt.FPT(backbone, fpt.get_task("bit-xor").spec)
    named = freeze.named_groups(model)  # raises if a parameter is in no group or in two
    assert sum(len(g) for g in named.values()) == len(list(model.parameters()))
    counts = freeze.apply(model, fpt.PAPER_GROUPS)
    assert counts["trainable_params"] / counts["total_params"] < 0.01  # the paper's "well under 1%"
    assert all("LayerNorm" in n for n in named["layernorm"])
    assert list(named["positional"]) == ["backbone.model.embeddings.position_embeddings.weight"]


def test_full_fine_tuning_leaves_the_token_table_untouched(tiny_cfg, tmp_path):
    """What the report's note on `train: all` says: the input layer takes the token-embedding table's place, so no
    gradient reaches it and training leaves it as it was, while the rest of the embedding group (BERT's token-type
    rows) and the body move."""
    cfg = tiny_cfg(train="all", steps=4, eval_every=2, weight_decay=0.1)
    initial = dict(build_model(cfg, fpt.get_task(cfg.task, **cfg.task_args)).state_dict())
    fpt.train(cfg, quiet=True, out=tmp_path)
    trained = load_file(tmp_path / "trained.safetensors")
    prefix = "backbone.model.embeddings."
    assert {prefix + "word_embeddings.weight", prefix + "token_type_embeddings.weight"} <= set(trained)
    assert torch.equal(trained[prefix + "word_embeddings.weight"], initial[prefix + "word_embeddings.weight"])
    for name in (prefix + "token_type_embeddings.weight", "backbone.model.encoder.layer.0.attention.self.query.weight"):
        assert not torch.equal(trained[name], initial[name])
