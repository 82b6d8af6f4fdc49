import torch

import fpt
from fpt.model import FPT, init_input_layer, readout


def test_readout_last_k_follows_padding():
    hidden = torch.arange(2 * 5 * 1, dtype=torch.float).reshape(2, 5, 1)  # token value = position (+5 for row 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert readout(hidden, mask, "last", 2)[:, :, 0].tolist() == [[1.0, 2.0], [8.0, 9.0]]
    assert readout(hidden, mask, "mean", 1)[:, 0, 0].tolist() == [1.0, 7.0]


def test_input_init_matched_vs_paper():
    linear = torch.nn.Linear(4, 64)
    init_input_layer(linear, "matched", target_norm=2.0)
    assert linear.bias.abs().sum() == 0
    x = torch.randn(1000, 4)  # unit RMS inputs map to the target norm on average
    assert abs(linear(x).norm(dim=-1).pow(2).mean().sqrt().item() - 2.0) < 0.1
    init_input_layer(linear, "paper", target_norm=2.0)
    assert linear.bias.abs().sum() > 0
    assert torch.allclose(linear.weight.T @ linear.weight, 1.41**2 * torch.eye(4), atol=1e-4)  # orthogonal, gain 1.41


def test_paper_init_washes_out_position_on_minilm():
    """Why `matched` is the default: BERT's embedding LayerNorm(input + position) is dominated by the paper init's
    bias (norm ≈ 11 vs ≈ 1 for MiniLM's embeddings), so positions and even input values become indistinguishable."""
    backbone = fpt.get_backbone("minilm").eval()
    spec = fpt.get_task("bit-xor").spec
    similarity = {}
    for how in ("paper", "matched"):
        torch.manual_seed(0)
        model = FPT(backbone, spec, how)
        with torch.no_grad():
            ones = backbone.model.embeddings(inputs_embeds=model.input_layer(torch.ones(1, 10, 1)))[0]
            zeros = backbone.model.embeddings(inputs_embeds=model.input_layer(torch.zeros(1, 10, 1)))[0]
        ones, zeros = torch.nn.functional.normalize(ones, dim=-1), torch.nn.functional.normalize(zeros, dim=-1)
        similarity[how] = (ones * zeros).sum(-1).mean().item()  # same position, input 1 vs input 0
    assert similarity["paper"] > 0.98  # the input bit barely registers
    assert similarity["matched"] < 0.6


def test_forward_shapes_multi_output(tiny_bert_dir):
    backbone = fpt.get_backbone("bert", path=tiny_bert_dir)
    spec = fpt.get_task("bit-memory", n_bits=100, patch=10).spec
    model = FPT(backbone, spec)
    x = torch.randn(3, spec.max_tokens, 10)
    logits = model(x, torch.ones(3, spec.max_tokens, dtype=torch.bool))
    assert logits.shape == (3, 100, 2)


def test_matched_init_maps_no_input_to_zero_where_the_body_adds_nothing():
    """On bodies that add nothing to the input before their first norm (Llama, T5), a zero bias would embed every
    0 bit as the zero vector, whose gradient through the RMSNorms is not finite: the bias is nonzero there."""
    linear = torch.nn.Linear(1, 64)
    init_input_layer(linear, "matched", target_norm=2.0, zero_bias=False)
    assert abs(linear.bias.norm().item() - 2.0) < 1e-5
    assert linear(torch.zeros(3, 1)).norm(dim=-1).min() > 1.0
