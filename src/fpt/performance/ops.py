"""Fast paths for the frozen body: dropout, attention and frozen products that compute what PyTorch's would, for less.

Why: torch's CPU dropout draws one Mersenne-Twister number per element through `bernoulli_`, and CPU
scaled-dot-product attention has no fused kernel with dropout, so in training it falls back to a math path with NaN
guards over every (B, H, T, T) score. Here dropout masks come from 16-bit slices of 64-bit random words (four mask
elements per word), CPU training attention with dropout is one autograd function (DropoutAttention), and products
with frozen weights go through oneDNN with no weight gradient (linear, feed_forward, gated_feed_forward); their
backward products (gradient × weight) go through torch.matmul, which on the Zen 1 CPU measured ran as fast as oneDNN
on the weight's transpose or faster, much faster on wide feed-forward weights. Everything else goes to PyTorch's own
kernels. What each path buys, measured, is on docs/performance.md (timings go stale; that page keeps them with their
source).

One switch fences them: `enabled` names the paths in use (default_paths(): all of them, but oneDNN's products only on
CPUs with AVX-512; the environment variable FPT_FAST_PATHS sets it: "all", "none", or a comma list of PATHS), and
`fast_paths(...)` changes it for a block of code, e.g. to test or time a path against PyTorch's op. A path switched
off gives way to PyTorch's own op.

Under torch.compile all of these step aside for PyTorch's own ops (F.dropout, scaled_dot_product_attention,
F.linear), which the compiler traces and fuses; the hand-written paths call numpy and oneDNN directly, which it
cannot.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_INT16_LOW = -(2**15)

# The hand-written paths: dropout masks from numpy's words, attention with dropout in blocks, frozen products through
# oneDNN, and the frozen feed-forward block's chunked temporaries.
PATHS = ("dropout", "attention", "onednn", "chunking")


def parse_paths(text: str) -> frozenset[str]:
    """ "all" / "none" / a comma list of PATHS → the set of paths in use."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return frozenset(PATHS)
    if names == {"none"}:
        return frozenset()
    unknown = sorted(names - set(PATHS))
    if unknown:
        raise ValueError(f"unknown fast path {unknown[0]!r} in FPT_FAST_PATHS; choose all, none or from {PATHS}")
    return frozenset(names)


def default_paths(capability: str | None = None) -> frozenset[str]:
    """The paths that pay on this CPU (`capability`: torch.backends.cpu.get_cpu_capability()'s answer). oneDNN's fp32
    products ran 10–20% faster than torch's default matmul on an AVX-512 CPU (Zen 4) and cost 4% of the step on an
    AVX2 one (Zen 1, `fpt bench`'s fpt-no-onednn row): that path is on only where the CPU has AVX-512. The others
    stay on everywhere (they cost nothing measurable where they do not pay, and save memory)."""
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    return frozenset(PATHS) if capability.startswith("AVX512") else frozenset(PATHS) - {"onednn"}


enabled: frozenset[str] = (
    parse_paths(os.environ["FPT_FAST_PATHS"]) if os.environ.get("FPT_FAST_PATHS") else default_paths()
)


@contextmanager
def fast_paths(*names: str) -> Iterator[None]:
    """Only the named hand-written paths (none if no name is given) in use inside the block; then as before."""
    global enabled
    before, enabled = enabled, parse_paths(",".join(names) or "none")
    try:
        yield
    finally:
        enabled = before


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout(x, p, training). On the CPU the keep mask is drawn 16 bits per element, so p is rounded to a
    multiple of 1/65536 (0.1 → 0.100006); elsewhere it is F.dropout itself."""
    if not training or p == 0.0:
        return x
    if not hand_written(x, "dropout"):
        return F.dropout(x, p, True)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return kept(x, p)
    return Dropout.apply(x, p)


def hand_written(x: torch.Tensor, path: str) -> bool:
    """Whether fpt's hand-written CPU `path` may take x: the path is switched on, x is on the CPU and torch.compile
    is not tracing (which gets PyTorch's ops instead)."""
    return path in enabled and x.device.type == "cpu" and not torch.compiler.is_compiling()


def kept(x: torch.Tensor, p: float, seed: int | None = None) -> torch.Tensor:
    """x · keep / (1 − p) (dropout's output, or its gradient for the gradient), with the keep mask drawn from
    `seed` (default: a fresh seed()) straight into the result: no mask tensor beside it."""
    keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return draw(keep, p, bits(new_seed() if seed is None else seed)).mul_(x).mul_(1.0 / (1.0 - p))


class Dropout(torch.autograd.Function):
    """CPU dropout that keeps the seed of its mask for backward, not the mask: backward redraws it, which saves
    keeping a mask per dropped activation."""

    @staticmethod
    def forward(ctx, x, p):
        ctx.p, ctx.seed = p, new_seed()
        return kept(x, p, ctx.seed)

    @staticmethod
    def backward(ctx, grad):
        return kept(grad, ctx.p, ctx.seed), None  # the forward's mask


def new_seed() -> int:
    """A 63-bit seed for a run of mask draws, from torch's default generator: torch.manual_seed and fpt's
    checkpoints (which keep that generator's state) decide every mask."""
    return int(torch.empty((), dtype=torch.int64).random_())


def bits(seed: int) -> np.random.SFC64:
    """The random bits masks are drawn from: numpy's SFC64 generator, which gives 64-bit words faster than torch's
    CPU generator (Mersenne Twister), and the masks are a large share of a step's elementwise work."""
    return np.random.SFC64(seed)


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, seed: int | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """1 where an element is kept (probability 1 − p, rounded to 1/65536), else 0, in `dtype`, on the CPU: the
    first mask MaskDraws(…, seed) gives (seed: a fresh new_seed() if None)."""
    return draw(torch.empty(shape, dtype=dtype), p, bits(new_seed() if seed is None else seed))


def draw(keep: torch.Tensor, p: float, source: np.random.SFC64) -> torch.Tensor:
    """Fill `keep` (contiguous, floating point, on the CPU) with a keep mask and return it: the next 64 random bits
    of `source` per four elements, each element kept where its 16 bits, read as a signed integer, are at least
    −2¹⁵ + round(p · 2¹⁶). The comparison writes the floats directly, and float × float is one fused pass on the
    CPU, where float × uint8 or bool first converts the mask into a fresh float temporary and masked_fill or where
    run slower still."""
    n = keep.numel()
    words = torch.from_numpy(source.random_raw((n + 3) // 4).view(np.int16)[:n])
    return torch.ge(words.view(keep.shape), _INT16_LOW + round(p * 65536), out=keep)


class MaskDraws:
    """Keep masks drawn one after another from one seed into a reused buffer of `size` elements: the first is
    keep_mask(…, seed)'s, and each next one continues the same random stream. A mask is valid until the next."""

    def __init__(self, size: int, p: float, seed: int, dtype: torch.dtype = torch.float32) -> None:
        self.keep = torch.empty(size, dtype=dtype)
        self.p, self.source = p, bits(seed)

    def next(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return draw(self.keep[: math.prod(shape)].view(shape), self.p, self.source)


# oneDNN's fp32 matmul (the kernel behind torch's mkldnn linear) is faster than torch's default CPU matmul (MKL) on a
# transformer's (tokens × D) · (D × D′) products, with the weight contiguous or its transpose. A weight with other
# strides (a slice of a wider one) falls to a far slower path there: those go to F.linear.
ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x · weightᵀ + bias through oneDNN, no autograd: x (…, in), weight (out, in) contiguous or the transpose of a
    contiguous (in, out)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def frozen(x: torch.Tensor, *weights: torch.Tensor | None) -> bool:
    """Whether a product of x with `weights` can take the frozen CPU path: fp32 on a CPU with oneDNN, outside
    autocast and torch.compile, and every weight (or bias) contiguous and not trained."""
    return (
        ONEDNN
        and hand_written(x, "onednn")
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and all(w is None or (w.dtype == torch.float32 and w.is_contiguous() and not w.requires_grad) for w in weights)
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias). With a frozen weight and bias on the CPU (see `frozen`) the products run through
    oneDNN, forward and backward, and backward gives x's gradient alone: nothing of x is kept for it."""
    if not frozen(x, weight, bias):
        return F.linear(x, weight, bias)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return onednn_linear(x, weight, bias)
    return FrozenLinear.apply(x, weight, bias)


class FrozenLinear(torch.autograd.Function):
    """x · Wᵀ + b with W and b frozen: backward is grad · W, no weight gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return torch.matmul(grad, weight), None, None


def project(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """layer(x) for one of a body's linear layers: through `linear` for a plain nn.Linear, through the module itself
    where a method (fpt.methods: LoRA, (IA)³) has wrapped it."""
    if type(layer) is nn.Linear:
        return linear(x, layer.weight, layer.bias)
    return layer(x)


FEED_FORWARD_ROWS = 1024  # tokens a frozen feed-forward block takes at a time after its first product


def feed_forward(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    act: Callable[[torch.Tensor], torch.Tensor],
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    act_backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """act(x · w1ᵀ + b1) · w2ᵀ + b2, x (…, D) → (…, D′): a transformer's feed-forward block. Frozen on the CPU (see
    `frozen`) it is one autograd function (FrozenFeedForward); otherwise torch's ops. act_backward(grad, pre) is
    act's gradient at its input `pre`, when known (otherwise backward runs act again under autograd)."""
    if not frozen(x, w1, b1, w2, b2):
        return F.linear(act(F.linear(x, w1, b1)), w2, b2)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return onednn_linear(act(onednn_linear(x, w1, b1)), w2, b2)
    return FrozenFeedForward.apply(x, w1, b1, act, w2, b2, act_backward)


class FrozenFeedForward(torch.autograd.Function):
    """A frozen feed-forward block that keeps only the activation's input (B·T × 4D) for backward, like autograd
    does, but never holds a full-size activation output or its gradient: after the first product, forward and
    backward take FEED_FORWARD_ROWS tokens at a time, so those (4D-wide) temporaries are a chunk's, and the step's
    peak (at the forward's last layer) is lower. Products run through oneDNN."""

    @staticmethod
    def forward(ctx, x, w1, b1, act, w2, b2, act_backward):
        rows = x.reshape(-1, x.shape[-1])
        pre = onednn_linear(rows, w1, b1)  # (N, 4D)
        ctx.rows = FEED_FORWARD_ROWS if "chunking" in enabled else max(1, len(pre))  # off: all tokens at once
        out = torch.cat([onednn_linear(act(chunk), w2, b2) for chunk in pre.split(ctx.rows)])
        ctx.save_for_backward(pre, w1, w2)
        ctx.act, ctx.act_backward = act, act_backward
        return out.view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, grad):
        pre, w1, w2 = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        parts = []
        for pre_chunk, grad_chunk in zip(pre.split(ctx.rows), rows.split(ctx.rows), strict=True):
            grad_act = torch.matmul(grad_chunk, w2)  # (n, 4D)
            if ctx.act_backward is not None:
                grad_pre = ctx.act_backward(grad_act, pre_chunk)
            else:
                with torch.enable_grad():
                    at = pre_chunk.detach().requires_grad_()
                    (grad_pre,) = torch.autograd.grad(ctx.act(at), at, grad_act)
            parts.append(torch.matmul(grad_pre, w1))
        return torch.cat(parts).view(*grad.shape[:-1], -1), None, None, None, None, None, None


def gated_feed_forward(
    x: torch.Tensor,
    gate: tuple[torch.Tensor, torch.Tensor | None],
    up: tuple[torch.Tensor, torch.Tensor | None],
    act: Callable[[torch.Tensor], torch.Tensor],
    down: tuple[torch.Tensor, torch.Tensor | None],
    act_backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A gated feed-forward block (Llama's SwiGLU): down(act(gate(x)) · up(x)), x (…, D) → (…, D′), each of gate, up
    and down a linear layer's (weight, bias). Frozen on the CPU (see `frozen`) it is one autograd function
    (FrozenGatedFeedForward); otherwise torch's ops. act_backward as in `feed_forward`."""
    if not frozen(x, *gate, *up, *down):
        return F.linear(act(F.linear(x, *gate)) * F.linear(x, *up), *down)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return onednn_linear(act(onednn_linear(x, *gate)) * onednn_linear(x, *up), *down)
    return FrozenGatedFeedForward.apply(x, *gate, *up, act, *down, act_backward)


class FrozenGatedFeedForward(torch.autograd.Function):
    """A frozen gated feed-forward block that keeps the gate's and the up projection's outputs (B·T × F each) for
    backward, where autograd would also keep act(gate): as FrozenFeedForward, after the first products forward and
    backward take FEED_FORWARD_ROWS tokens at a time, so the other F-wide temporaries are a chunk's."""

    @staticmethod
    def forward(ctx, x, w_gate, b_gate, w_up, b_up, act, w_down, b_down, act_backward):
        rows = x.reshape(-1, x.shape[-1])
        gate, up = onednn_linear(rows, w_gate, b_gate), onednn_linear(rows, w_up, b_up)  # (N, F) each
        ctx.rows = FEED_FORWARD_ROWS if "chunking" in enabled else max(1, len(gate))  # off: all tokens at once
        chunks = zip(gate.split(ctx.rows), up.split(ctx.rows), strict=True)
        out = torch.cat([onednn_linear(act(g) * u, w_down, b_down) for g, u in chunks])
        ctx.save_for_backward(gate, up, w_gate, w_up, w_down)
        ctx.act, ctx.act_backward = act, act_backward
        return out.view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, grad):
        gate, up, w_gate, w_up, w_down = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        parts = []
        for g, u, grad_chunk in zip(gate.split(ctx.rows), up.split(ctx.rows), rows.split(ctx.rows), strict=True):
            grad_hidden = torch.matmul(grad_chunk, w_down)  # (n, F): the gradient of act(g) · u
            if ctx.act_backward is not None:
                activated, grad_gate = ctx.act(g), ctx.act_backward(grad_hidden * u, g)
            else:
                with torch.enable_grad():
                    at = g.detach().requires_grad_()
                    activated = ctx.act(at)
                    (grad_gate,) = torch.autograd.grad(activated, at, grad_hidden * u)
                activated = activated.detach()
            grad_up = grad_hidden.mul_(activated)
            parts.append(torch.addmm(torch.matmul(grad_gate, w_gate), grad_up, w_up))
        grads = (None,) * 8  # nothing for the weights, biases and functions
        return torch.cat(parts).view(*grad.shape[:-1], -1), *grads


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keys: torch.Tensor | None,
    p: float,
    training: bool,
    causal: bool = False,
    at: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention: q (B, H, Tq, d), k and v (B, H, T, d), keys (B, 1, 1, T) bool (True: a real token) or
    None (all real) → (B, H, Tq, d), with dropout p on the attention probabilities in training. causal: each query
    sees the keys at and before its position only, its position being `at` (B, Tq), default 0..Tq−1."""
    p = p if training else 0.0
    fused = p == 0.0 or not hand_written(q, "attention")  # fused kernels: flash / memory-efficient, dropout on CUDA
    if causal and fused and keys is None and at is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # no mask to build
    if causal:
        keys = visible(keys, q.shape[2] if at is None else at, k.shape[2], q.device)
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=p)
    return DropoutAttention.apply(q, k, v, keys, p)


def visible(keys: torch.Tensor | None, at: int | torch.Tensor, t: int, device: torch.device) -> torch.Tensor:
    """The keys each query of a causal attention sees, (B or 1, 1, Tq, T) bool: those at or before its position,
    `at` (B, Tq) or 0..at−1, that are real tokens (keys (B, 1, 1, T), None: all) or the query's own."""
    key_positions = torch.arange(t, device=device)
    at = torch.arange(at, device=device)[None] if isinstance(at, int) else at  # (B or 1, Tq)
    seen = (key_positions <= at[..., None])[:, None]  # (B or 1, 1, Tq, T)
    # its own key keeps a query at a padding token with no real token before it (left padding) from a NaN softmax
    return seen if keys is None else seen & (keys | (key_positions == at[..., None])[:, None])


# (Tq, T) score matrices handled at a time, per torch thread: 1 MiB of fp32 scores, so a block's three (Tq, T)
# buffers stay in cache; per thread, because one 512 × 512 block is a small matrix product, which splits poorly over
# threads. The block sizes' timings: docs/performance.md.
CHUNK_ELEMENTS = 1 << 18


class DropoutAttention(torch.autograd.Function):
    """CPU attention with dropout on the probabilities, by hand, keeping nothing of size (B, H, Tq, T) for backward.

    Forward keeps q (scaled), k, v and the seed of its dropout masks (new_seed); backward recomputes the
    probabilities (a (Tq × d) · (d × T) product and a softmax, bitwise the forward's) and redraws the same dropout
    masks from the seed. Both passes go through the B·H (Tq, T) score matrices a block at a time
    (Blocks), in place (softmax in place, the dropout scale folded into the (Tq, d)-sized products): a long
    sequence's (B, H, Tq, T) tensors were most of its memory and time, and a block's buffers stay in cache. The
    gradient through softmax takes Σ_j P_ij · g_ij over the kept entries, so neither the dropped probabilities nor
    the output are kept. The masks are drawn per block, in order, from that seed (MaskDraws). `keys` (B or 1, 1,
    1 or Tq, T) bool says which keys a query sees: a padding mask, or a causal one (`visible`), one byte a score."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, q, k, v, keys, p):
        b, h, tq, d = q.shape
        scale, keep_scale = d**-0.5, 1.0 / (1.0 - p)
        qs = q * scale  # in q's memory layout
        blocks = Blocks(b, h, tq, k.shape[2], CHUNK_ELEMENTS * torch.get_num_threads())
        pad = blocks.of(None if keys is None else (~keys).expand(b, h, -1, -1))  # True at keys not seen
        seed = new_seed()
        out = Blocks.empty(b, h, tq, d, q)
        masks, scores = MaskDraws(blocks.size, p, seed, q.dtype), q.new_empty(blocks.size)
        for qb, kb, vb, padb, outb in zip(blocks.of(qs), blocks.of(k), blocks.of(v), pad, blocks.of(out), strict=True):
            probs = softmax_scores(qb, kb, padb, scores)  # (n, Tq, T)
            torch.matmul(probs.mul_(masks.next(probs.shape)), vb, out=outb)
        ctx.save_for_backward(qs, k, v, keys)
        ctx.p, ctx.seed, ctx.keep_scale, ctx.scale = p, seed, keep_scale, scale
        ctx.blocks = blocks  # backward draws the masks block by block too: the same blocks, whatever its threads
        return out.mul_(keep_scale)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):  # grad (B, H, Tq, d)
        qs, k, v, keys = ctx.saved_tensors
        b, h, tq, d = grad.shape
        t, s = k.shape[2], ctx.keep_scale
        blocks = ctx.blocks
        pad = blocks.of(None if keys is None else (~keys).expand(b, h, -1, -1))
        grad_q, grad_k, grad_v = (Blocks.empty(b, h, n, d, qs) for n in (tq, t, t))
        masks = MaskDraws(blocks.size, ctx.p, ctx.seed, qs.dtype)
        scores, buffer = qs.new_empty(blocks.size), qs.new_empty(blocks.size)
        # the key and value gradients of a block are built transposed, (n, d, T), then copied in: a (d × Tq)·(Tq × T)
        # product runs faster on the CPU than the (T × Tq)·(Tq × d) one with its first factor transposed
        transposed = qs.new_empty(blocks.size // tq * d)  # (…, d, T)
        operands = (blocks.of(qs), blocks.of(k), blocks.of(v), blocks.of(grad), pad)
        results = (blocks.of(grad_q), blocks.of(grad_k), blocks.of(grad_v))
        for qb, kb, vb, gb, padb, grad_qb, grad_kb, grad_vb in zip(*operands, *results, strict=True):
            probs = softmax_scores(qb, kb, padb, scores)  # P, recomputed
            keep = masks.next(probs.shape)  # the forward's mask
            # dL/dP = s · (g vᵀ) on kept entries, 0 on dropped ones; dL/dS = P ⊙ (dL/dP − Σ_j P_ij dL/dP_ij)
            grad_p = torch.matmul(gb, vb.transpose(-1, -2), out=buffer[: probs.numel()].view(probs.shape))
            grad_p.mul_(keep)  # dL/dP / s
            row_sum = torch.linalg.vecdot(probs, grad_p)  # (n, Tq)
            grad_s = grad_p.sub_(row_sum.unsqueeze(-1)).mul_(probs)  # dL/dS / s
            torch.matmul(grad_s, kb, out=grad_qb)
            kt = transposed[: kb.numel()].view(*kb.shape[:-2], d, t)
            kt = torch.matmul(qb.transpose(-1, -2), grad_s, out=kt)  # qs carries the scale already
            torch.mul(kt.transpose(-1, -2), s, out=grad_kb)
            vt = torch.matmul(gb.transpose(-1, -2), probs.mul_(keep), out=kt)  # gᵀ (P ⊙ keep)
            torch.mul(vt.transpose(-1, -2), s, out=grad_vb)
        return grad_q.mul_(s * ctx.scale), grad_k, grad_v, None, None


class Blocks:
    """How DropoutAttention goes through the B·H score matrices of a (B, H, Tq, d) × (B, H, T, d) attention: in
    blocks of at most `chunk` scores (Tq × T each, `size` scores in the largest block), in (B, H) order.

    q, k and v come in as (B, H, T, d) views of (B, T, H, d) projections, and a block is a view of them: a run of
    one batch element's heads (n, T, d), which matrix products take as it is, or, when all heads of several batch
    elements fit, a run of batch elements (n, H, T, d), which torch.matmul copies into a (n·H, T, d) operand a block
    at a time (in cache). Results are built in the same (B, T, H, d) layout, so they go back to (B, T, D) without a
    copy either."""

    def __init__(self, b: int, h: int, tq: int, t: int, chunk: int) -> None:
        per = max(1, chunk // (tq * t))  # score matrices a block holds
        if per >= h:
            n = min(b, per // h)
            self.index: list = [slice(i, i + n) for i in range(0, b, n)]
            self.size = n * h * tq * t
        else:
            self.index = [(i, slice(j, j + per)) for i in range(b) for j in range(0, h, per)]
            self.size = per * tq * t

    def of(self, x: torch.Tensor | None) -> list:
        """The blocks of x (B, H, ·, ·), views; None for each block where x is None."""
        return [None if x is None else x[i] for i in self.index]

    @staticmethod
    def empty(b: int, h: int, t: int, d: int, like: torch.Tensor) -> torch.Tensor:
        """A (B, H, T, d) result, (B, T, H, d) in memory."""
        return like.new_empty(b, t, h, d).transpose(1, 2)


def softmax_scores(q: torch.Tensor, k: torch.Tensor, pad: torch.Tensor | None, buffer: torch.Tensor) -> torch.Tensor:
    """softmax(q · kᵀ) over keys, q (…, Tq, d) already scaled, k (…, T, d) → (…, Tq, T) in the front of `buffer`;
    pad (…, 1 or Tq, T) True where a key is not seen (it gets probability 0), or None. Softmax runs in place (aten's
    row-wise kernel reads each row before writing it)."""
    shape = (*q.shape[:-1], k.shape[-2])
    scores = torch.matmul(q, k.transpose(-1, -2), out=buffer[: math.prod(shape)].view(shape))
    if pad is not None:
        scores.masked_fill_(pad, torch.finfo(scores.dtype).min)
    return torch.ops.aten._softmax.out(scores, -1, False, out=scores)
