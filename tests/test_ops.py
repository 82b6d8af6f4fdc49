"""fpt's fast paths compute what transformers and PyTorch compute: the BERT and Llama bodies, dropout, attention."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fpt
from fpt.backbones.base import Backbone
from fpt.model import last_positions, readout
from fpt.performance import ops


@pytest.fixture(autouse=True)
def every_path_on():
    """Every hand-written path on, whatever this CPU's default (oneDNN's products are off by default without
    AVX-512): each test here checks a path against torch's own, so it must run the path."""
    with ops.fast_paths(*ops.PATHS):
        yield


def padded_batch(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    embeds = torch.randn(3, 12, d)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 9:] = False
    mask[2, 4:] = False
    return embeds, mask


@pytest.mark.parametrize("frozen", [False, True])  # frozen: fpt.performance.ops' frozen CPU path (oneDNN products)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bert_body_matches_transformers(tiny_bert_dir, attn, frozen):
    backbone = fpt.get_backbone("bert", path=tiny_bert_dir).eval().requires_grad_(not frozen)
    backbone.model.set_attn_implementation(attn)
    embeds, mask = padded_batch(backbone.hidden_size)
    with torch.no_grad():
        ref = backbone.model(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        ours = backbone(embeds, mask)
        at = backbone.forward_at(embeds, mask, last_positions(mask, 3))
        full = backbone(embeds, torch.ones_like(mask))
        full_ref = backbone.model(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at, readout(ref, mask, "last", 3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full, full_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frozen", [False, True])
def test_last_layer_on_read_tokens_gives_the_same_gradients(tiny_bert_dir, frozen):
    """forward_at skips the last layer for tokens nobody reads: the input gradient is that of the whole body."""
    backbone = fpt.get_backbone("bert", path=tiny_bert_dir).eval().requires_grad_(not frozen)
    embeds, mask = padded_batch(backbone.hidden_size)
    grads = []
    for pruned in (True, False):
        x = embeds.clone().requires_grad_(True)
        positions = last_positions(mask, 2)
        out = backbone.forward_at(x, mask, positions) if pruned else readout(backbone(x, mask), mask, "last", 2)
        out.square().sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_frozen_body_gives_the_input_gradient_of_torchs_path(tiny_bert_dir):
    backbone = fpt.get_backbone("bert", path=tiny_bert_dir).eval()
    embeds, mask = padded_batch(backbone.hidden_size)
    grads = []
    for frozen in (False, True):
        backbone.requires_grad_(not frozen)
        x = embeds.clone().requires_grad_(True)
        backbone(x, mask).square().sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def llama(folder: str, frozen: bool, bos: bool) -> Backbone:
    """The tiny Llama in training mode with attention dropout 1e-9: the training paths run (fpt's CPU attention with
    dropout too), and no entry is dropped (p rounds to 0 in 16 bits; torch's dropout draws none in practice). Frozen:
    as FPT trains it, only the RMSNorm weights (the layernorm group) need gradients."""
    backbone = fpt.get_backbone("llama", path=folder, dropout=1e-9).train().requires_grad_(not frozen)
    for p in backbone.parameter_groups()["layernorm"]:
        p.requires_grad_(True)
    backbone.use_bos(bos)
    return backbone


def llama_batch(d: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right padding (as fpt's batches come) and, in the last row, left padding (the padding mask then stays); the
    positions (B, k) of each row's last k real tokens."""
    embeds, mask = padded_batch(d)
    mask = torch.cat([mask, mask[2:].flip(1)])
    return torch.cat([embeds, embeds[:1]]), mask, torch.stack([row.nonzero()[-k:, 0] for row in mask])


def run_llama(forward, backbone: Backbone, embeds: torch.Tensor, mask: torch.Tensor, positions=None) -> list:
    """[hidden states at real tokens (or at `positions`), their loss, its gradients with respect to the inputs and
    every RMSNorm weight]."""
    x = embeds.clone().requires_grad_(True)
    if positions is None:
        out = forward(x, mask)[mask]
    else:
        out = forward(x, mask, positions)
    loss = out.square().mean()
    return [out, loss, *torch.autograd.grad(loss, [x, *backbone.parameter_groups()["layernorm"]])]


def assert_all_close(ours: list, expected: list) -> None:
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bos", [False, True])
@pytest.mark.parametrize("frozen", [False, True])  # frozen: fpt.performance.ops' frozen CPU path (oneDNN products)
def test_llama_body_matches_transformers(tiny_llama_dir, frozen, bos):
    """fpt's decode loop against LlamaModel's forward (what the base Backbone.forward runs, BOS first when prepended):
    hidden states at the real tokens, a loss on them and its gradients; the read-out tokens' (forward_at) too."""
    backbone = llama(tiny_llama_dir, frozen, bos)
    embeds, mask, positions = llama_batch(backbone.hidden_size, 3)
    transformers_forward = Backbone.forward.__get__(backbone)
    expected = run_llama(transformers_forward, backbone, embeds, mask)
    assert_all_close(run_llama(backbone, backbone, embeds, mask), expected)

    # forward_at: the last layer on the read-out tokens alone, the same outputs there and the same gradients
    def gathered(x, m, rows):  # the whole body, then the rows' tokens
        return transformers_forward(x, m).gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))

    assert_all_close(run_llama(backbone.forward_at, backbone, embeds, mask, positions),
                     run_llama(gathered, backbone, embeds, mask, positions))  # fmt: skip


@pytest.mark.parametrize("off", [*ops.PATHS, "all"])
def test_llama_body_with_a_hand_written_path_off_gives_the_same_numbers(tiny_llama_dir, off):
    backbone = llama(tiny_llama_dir, frozen=True, bos=True)
    embeds, mask, positions = llama_batch(backbone.hidden_size, 2)

    def run() -> list:
        return [
            *run_llama(backbone, backbone, embeds, mask),
            *run_llama(backbone.forward_at, backbone, embeds, mask, positions),
        ]

    expected = run()
    with ops.fast_paths(*([] if off == "all" else [path for path in ops.PATHS if path != off])):
        assert_all_close(run(), expected)


def test_dropout_rate_scale_and_gradient():
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = ops.dropout(x, 0.1, True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 2e-3
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(mask · x / (1 - p)) / dx = mask / (1 - p)
    assert ops.dropout(x, 0.1, False) is x and ops.dropout(x, 0.0, True) is x


def test_dropout_follows_the_torch_seed():
    a = (torch.manual_seed(3), ops.dropout(torch.ones(1000), 0.5, True))[1]
    b = (torch.manual_seed(3), ops.dropout(torch.ones(1000), 0.5, True))[1]
    assert torch.equal(a, b)


def test_attention_training_path_matches_sdpa_without_dropout():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 7, 4), torch.randn(2, 2, 7, 4)  # (B, H, T, d)
    keys = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keys)
    # p below 1/65536 rounds to no dropped entry: the written-out CPU path, without randomness
    torch.testing.assert_close(ops.attention(q, k, v, keys, 1e-9, True), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("p", [0.0, 1e-9])  # 0: PyTorch's fused kernel; 1e-9: the written-out path, nothing dropped
@pytest.mark.parametrize("padded", [False, True])
def test_causal_attention_matches_sdpa(p, padded):
    """Causal attention sees the keys up to each query's position: the queries 0..T−1, or those at `at` (forward_at's
    read-out tokens), which give the same rows."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 7, 4) for _ in range(3))  # (B, H, T, d)
    keys = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :] if padded else None
    seen = torch.ones(7, 7, dtype=torch.bool).tril() & (True if keys is None else keys)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=seen)
    out = ops.attention(q, k, v, keys, p, True, causal=True)
    torch.testing.assert_close(out[:, :, :4], expected[:, :, :4], atol=1e-6, rtol=1e-5)  # real queries
    assert torch.isfinite(out).all()
    at = torch.tensor([[6, 2], [3, 0]])  # (B, Tq)
    rows = q.gather(2, at[:, None, :, None].expand(-1, 2, -1, 4))  # (B, H, Tq, d)
    expected_rows = out.gather(2, at[:, None, :, None].expand(-1, 2, -1, 4))
    torch.testing.assert_close(ops.attention(rows, k, v, keys, p, True, causal=True, at=at), expected_rows)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_dropout_gradients(causal):
    """The hand-written backward of CPU attention with dropout equals autograd's through the same dropped entries."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 6, 4, requires_grad=True) for _ in range(3))
    keys = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]
    grad = torch.randn(2, 3, 6, 4)
    torch.manual_seed(7)
    out = ops.attention(q, k, v, keys, 0.3, True, causal=causal)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    torch.manual_seed(7)  # the same draw: the mask the fast path used
    seen = ops.visible(keys, 6, 6, q.device) if causal else keys
    scores = (q @ k.transpose(-2, -1) / 2).masked_fill(~seen, torch.finfo(q.dtype).min)
    keep = ops.keep_mask(scores.shape, 0.3)
    expected = scores.softmax(-1) * keep / 0.7 @ v
    torch.testing.assert_close(out, expected)
    for a, b in zip(ours, torch.autograd.grad(expected, (q, k, v), grad), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("batch", "chunk", "draws"),
    [
        (2, 2 * 25, [2, 1, 2, 1]),  # runs of heads: (b, heads 0-1), (b, head 2) for each b
        (3, 6 * 25, [6, 3]),  # all heads of two batch elements fit: batch elements 0-1, then 2
    ],
)
def test_attention_with_dropout_in_blocks(monkeypatch, batch, chunk, draws):
    """Scores in several blocks (each its own mask draw), q, k, v as the model passes them ((B, H, T, d) views of
    (B, T, H, d) projections): the same outputs and gradients as one block through the same masks, and a second
    backward over the same graph, on another thread count, redraws the same masks."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(batch, 5, 3, 4, requires_grad=True) for _ in range(3))  # (B, T, H, d)
    keys = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 4 + [False]][:batch])[:, None, None, :]
    grad = torch.randn(batch, 3, 5, 4)
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", chunk // torch.get_num_threads())  # a block's scores per thread
    blocks = ops.Blocks(batch, 3, 5, 5, chunk)
    assert blocks.size == max(draws) * 25 and len(blocks.index) == len(draws)
    heads = [t.transpose(1, 2) for t in (q, k, v)]  # (B, H, T, d) views
    torch.manual_seed(7)
    out = ops.attention(*heads, keys, 0.3, True)
    ours = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a backward on fewer threads keeps the forward's blocks, so the same mask draws
    again = torch.autograd.grad(out, (q, k, v), grad)
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    masks = ops.MaskDraws(max(draws) * 25, 0.3, ops.new_seed())
    keep = torch.cat([masks.next((n, 5, 5)).clone() for n in draws]).view(batch, 3, 5, 5)
    scores = (heads[0] @ heads[1].transpose(-2, -1) / 2).masked_fill(~keys, torch.finfo(q.dtype).min)
    expected = scores.softmax(-1) * keep / 0.7 @ heads[2]
    torch.testing.assert_close(out, expected)
    for a, b, c in zip(ours, again, torch.autograd.grad(expected, (q, k, v), grad), strict=True):
        torch.testing.assert_close(a, c)
        assert torch.equal(a, b)
    # results in the projections' layout: back to (B, T, D) without a copy
    assert out.transpose(1, 2).is_contiguous() and all(g.is_contiguous() for g in ours)


def test_keep_masks_drawn_in_turn_continue_one_stream():
    """MaskDraws' first mask is keep_mask's from the same seed; the next ones continue its random words (four mask
    elements a word), and torch.manual_seed decides the seed."""
    torch.manual_seed(5)
    draws = ops.MaskDraws(4 * 7, 0.25, ops.new_seed())
    a, b = draws.next((4, 7)).clone(), draws.next((3, 5)).clone()  # 7 words, then 4
    torch.manual_seed(5)
    seed = ops.new_seed()
    assert torch.equal(a, ops.keep_mask((4, 7), 0.25, seed))
    assert torch.equal(torch.cat([a.flatten(), b.flatten()]), ops.keep_mask((44,), 0.25, seed)[:43])
    assert a.dtype == torch.float32 and set(a.unique().tolist()) == {0.0, 1.0}
    assert ops.keep_mask((2, 3), 0.25, dtype=torch.bfloat16).dtype == torch.bfloat16
    kept = ops.keep_mask((200_000,), 0.25).mean().item()
    assert abs(kept - 0.75) < 0.005


def test_dropout_backward_redraws_the_forwards_mask():
    torch.manual_seed(4)
    x = torch.randn(6, 9, 5, requires_grad=True)
    y = ops.dropout(x, 0.3, True)
    torch.randn(100)  # later draws from the same generator do not change the mask backward uses
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(grad != 0, y != 0)
    torch.testing.assert_close(grad[grad != 0], torch.full_like(grad[grad != 0], 1 / 0.7))
    with torch.no_grad():
        torch.manual_seed(4)
        torch.randn(6, 9, 5)  # x's draw
        assert torch.equal(ops.dropout(x, 0.3, True), y)  # without autograd: the same draw, no graph


@pytest.mark.skipif(not ops.ONEDNN, reason="oneDNN not in this torch build")
def test_frozen_linear_matches_torch_and_gives_the_input_gradient_only():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 8, requires_grad=True)
    weight, bias = torch.randn(5, 8), torch.randn(5)
    grad = torch.randn(3, 7, 5)
    y = ops.linear(x, weight, bias)
    assert y.grad_fn is not None and "FrozenLinear" in type(y.grad_fn).__name__
    (ours,) = torch.autograd.grad(y, x, grad)
    expected = torch.nn.functional.linear(x, weight, bias)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(ours, torch.autograd.grad(expected, x, grad)[0])
    trained = weight.clone().requires_grad_(True)  # a trained weight: torch's own path, with its gradient
    assert "FrozenLinear" not in type(ops.linear(x, trained, bias).grad_fn).__name__
    with torch.no_grad():
        torch.testing.assert_close(ops.linear(x, weight, None), x @ weight.T)


@pytest.mark.skipif(not ops.ONEDNN, reason="oneDNN not in this torch build")
@pytest.mark.parametrize("known_backward", [True, False])
def test_frozen_feed_forward_in_chunks_matches_autograd(monkeypatch, known_backward):
    """Chunks of 4 rows of 3·5 = 15 (the last one short): the output and input gradient of torch's own ops."""
    monkeypatch.setattr(ops, "FEED_FORWARD_ROWS", 4)
    torch.manual_seed(1)
    x = torch.randn(3, 5, 6, requires_grad=True)
    w1, b1, w2, b2 = torch.randn(24, 6), torch.randn(24), torch.randn(6, 24), torch.randn(6)
    gelu = torch.nn.functional.gelu
    y = ops.feed_forward(x, w1, b1, gelu, w2, b2, torch.ops.aten.gelu_backward if known_backward else None)
    assert "FrozenFeedForward" in type(y.grad_fn).__name__
    grad = torch.randn_like(y)
    expected = torch.nn.functional.linear(gelu(torch.nn.functional.linear(x, w1, b1)), w2, b2)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])


@pytest.mark.skipif(not ops.ONEDNN, reason="oneDNN not in this torch build")
@pytest.mark.parametrize("known_backward", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_frozen_gated_feed_forward_in_chunks_matches_autograd(monkeypatch, known_backward, bias):
    """Llama's SwiGLU block, down(silu(gate(x)) · up(x)), in chunks of 4 rows of 15: torch's output and input
    gradient."""
    monkeypatch.setattr(ops, "FEED_FORWARD_ROWS", 4)
    torch.manual_seed(1)
    x = torch.randn(3, 5, 6, requires_grad=True)
    gate, up, down = (
        (torch.randn(*shape), torch.randn(shape[0]) if bias else None) for shape in ((24, 6), (24, 6), (6, 24))
    )
    y = ops.gated_feed_forward(x, gate, up, F.silu, down, torch.ops.aten.silu_backward if known_backward else None)
    assert "FrozenGatedFeedForward" in type(y.grad_fn).__name__
    grad = torch.randn_like(y)
    expected = F.linear(F.silu(F.linear(x, *gate)) * F.linear(x, *up), *down)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])
    with torch.no_grad():
        torch.testing.assert_close(ops.gated_feed_forward(x, gate, up, F.silu, down), expected)


def test_frozen_path_takes_contiguous_fp32_weights_only():
    x = torch.randn(2, 3)
    weight = torch.randn(4, 6)
    assert ops.frozen(x, weight[:, :3].contiguous(), None) == ops.ONEDNN
    assert not ops.frozen(x, weight[:, :3])  # a slice: oneDNN's slow path
    assert not ops.frozen(x, weight[:, :3].contiguous().requires_grad_(True))
    assert not ops.frozen(x.double(), weight[:, :3].double().contiguous())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ops.frozen(x, weight[:, :3].contiguous())


def test_compiled_body_traces_whole_and_matches_eager(tiny_bert_dir):
    """Under torch.compile the hand-written paths (numpy masks, oneDNN calls, the padding check) step aside for
    PyTorch's ops: the frozen body's training forward and backward trace as one graph (fullgraph fails on any
    break) and give eager's loss and input gradient with dropout off."""
    backbone = fpt.get_backbone("bert", path=tiny_bert_dir).requires_grad_(False)
    embeds, mask = padded_batch(backbone.hidden_size)

    def step(forward):
        x = embeds.clone().requires_grad_()
        loss = forward(x, mask)[mask].square().mean()
        return loss, torch.autograd.grad(loss, x)[0]

    compiled = torch.compile(backbone, fullgraph=True, backend="aot_eager")
    backbone.train()  # dropout paths traced: fpt.performance.ops' CPU dropout would break the graph
    step(compiled)
    backbone.eval()
    loss, grad = step(compiled)
    expected_loss, expected_grad = step(backbone)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_one_switch_turns_each_hand_written_path_off(monkeypatch):
    """ops.enabled fences every hand-written path: inside fast_paths(...) only the named ones run, and a frozen
    feed-forward block gives the same numbers with its chunking off."""
    x = torch.randn(3, 5, 8)
    w, b = torch.randn(16, 8), torch.randn(16)
    assert ops.enabled == frozenset(ops.PATHS)  # every_path_on
    assert ops.hand_written(x, "dropout") and ops.frozen(x, w, b)
    with ops.fast_paths("dropout"):
        assert ops.hand_written(x, "dropout") and not ops.hand_written(x, "attention") and not ops.frozen(x, w, b)
    with ops.fast_paths():
        assert not any(ops.hand_written(x, p) for p in ops.PATHS)
    assert ops.enabled == frozenset(ops.PATHS)
    with pytest.raises(ValueError, match="unknown fast path 'fast'"):
        ops.parse_paths("dropout,fast")

    monkeypatch.setattr(ops, "FEED_FORWARD_ROWS", 4)  # 15 tokens: four chunks when chunking is on
    w2, b2 = torch.randn(8, 16), torch.randn(8)
    grads = []
    for paths in (ops.PATHS, ("onednn",)):  # chunking on, then off
        with ops.fast_paths(*paths):
            xs = x.clone().requires_grad_()
            y = ops.feed_forward(xs, w, b, F.gelu, w2, b2)
            y.square().sum().backward()
            grads.append((y.detach(), xs.grad))
    torch.testing.assert_close(grads[0], grads[1])


def test_onednn_products_are_on_by_default_only_on_avx512_cpus(monkeypatch):
    """The default paths by CPU kind: oneDNN's products paid on AVX-512 (Zen 4) and cost 4% on AVX2 (Zen 1);
    FPT_FAST_PATHS overrides the default, read when fpt.performance.ops is first imported."""
    assert ops.default_paths("AVX512") == frozenset(ops.PATHS)
    for kind in ("AVX2", "DEFAULT", "SVE256"):
        assert ops.default_paths(kind) == frozenset(ops.PATHS) - {"onednn"}
    assert ops.default_paths() == ops.default_paths(torch.backends.cpu.get_cpu_capability())
    code = "from fpt.performance import ops; print(','.join(sorted(ops.enabled)))"
    for value, expected in (("all", ops.PATHS), ("onednn,dropout", ("dropout", "onednn")), ("", ops.default_paths())):
        monkeypatch.setenv("FPT_FAST_PATHS", value)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == ",".join(sorted(expected)), value
