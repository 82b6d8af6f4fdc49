"""Fast paths for the frozen body: dropout and attention that compute what PyTorch's would, for less.

Measured on a 2-core CPU (minilm, bit-memory, one FPT step; `fpt bench` has the numbers): torch's CPU dropout draws
one Mersenne-Twister number per element through `bernoulli_`, about 10% of a step, and CPU scaled-dot-product
attention has no fused kernel with dropout, so in training it falls back to a math path with NaN guards over every
(B, H, T, T) score. Here dropout masks come from 16-bit slices of 64-bit random draws (four masks per draw), and
CPU training attention with dropout is one autograd function (DropoutAttention). Everything else goes to PyTorch's
own kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_INT16_LOW = -(2**15)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout(x, p, training). On the CPU the keep mask is drawn 16 bits per element, so p is rounded to a
    multiple of 1/65536 (0.1 → 0.100006); elsewhere it is F.dropout itself."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return kept(x, keep_mask(x.shape, p, x.device), p)
    return Dropout.apply(x, p)


def kept(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """x · keep / (1 − p): dropout's output through a uint8 keep mask (and its gradient, for the gradient)."""
    return x.mul(keep).mul_(1.0 / (1.0 - p))


class Dropout(torch.autograd.Function):
    """CPU dropout that keeps the random generator's state for backward, not its mask: backward redraws the mask
    (a few ms for a (B, T, D) batch), which saves a byte per element of every dropped activation."""

    @staticmethod
    def forward(ctx, x, p):
        rng = torch.get_rng_state()
        ctx.save_for_backward(rng)
        ctx.p = p
        return kept(x, keep_mask(x.shape, p, x.device), p)

    @staticmethod
    def backward(ctx, grad):
        (rng,) = ctx.saved_tensors
        generator = torch.Generator(device=grad.device)
        generator.set_state(rng)
        return kept(grad, keep_mask(grad.shape, ctx.p, grad.device, generator), ctx.p), None  # the forward's mask


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """1 where an element is kept (probability 1 − p, rounded to 1/65536), else 0, as uint8: one byte per element,
    and float × uint8 runs several times faster on the CPU than masked_fill or where with a bool mask."""
    return MaskDraws(math.prod(shape), p, device, generator).next(shape)


class MaskDraws:
    """Keep masks drawn one after another into two reused buffers (random words, then the mask), for up to `size`
    elements each: the draws are those of keep_mask, in order, and on the CPU a reused buffer costs no page faults.
    A returned mask is valid until the next draw."""

    def __init__(self, size: int, p: float, device: torch.device, generator: torch.Generator | None = None) -> None:
        self.words = torch.empty((size + 3) // 4, dtype=torch.int64, device=device)
        self.keep = torch.empty(size, dtype=torch.bool, device=device)
        self.threshold, self.generator = _INT16_LOW + round(p * 65536), generator

    def next(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        words = self.words[: (n + 3) // 4].random_(-(2**63), None, generator=self.generator)  # 64 random bits
        keep = self.keep[:n].view(shape)
        torch.ge(words.view(torch.int16)[:n].view(shape), self.threshold, out=keep)
        return keep.view(torch.uint8)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor | None, p: float, training: bool
) -> torch.Tensor:
    """Softmax attention: q (B, H, Tq, d), k and v (B, H, T, d), keys (B, 1, 1, T) bool (True: a real token) or
    None (all real) → (B, H, Tq, d), with dropout p on the attention probabilities in training."""
    p = p if training else 0.0
    if p == 0.0 or q.device.type != "cpu":  # fused kernels: flash / memory-efficient, with dropout on CUDA
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=p)
    return DropoutAttention.apply(q, k, v, keys, p)


CHUNK_ELEMENTS = 1 << 22  # (Tq, T) score rows of B·H handled at a time: 16 MiB of fp32 scores


class DropoutAttention(torch.autograd.Function):
    """CPU attention with dropout on the probabilities, by hand, keeping nothing of size (B, H, Tq, T) for backward.

    Forward keeps q, k, v and the random generator's state before the dropout draws; backward recomputes the
    probabilities (a (Tq × d) · (d × T) product and a softmax, bitwise the forward's) and redraws the same dropout
    masks from the saved state. Both passes go through the B·H (Tq, T) score matrices a chunk at a time
    (CHUNK_ELEMENTS), in place (softmax in place, the dropout scale folded into the (Tq, d)-sized products): a
    long sequence's (B, H, Tq, T) tensors were most of its memory and time, and on the CPU each fresh large buffer
    costs a pass of page faults, where a chunk's buffers come back from the allocator warm. The gradient through
    softmax takes Σ_j P_ij · g_ij over the kept entries, so neither the dropped probabilities nor the output are kept.
    The masks are drawn per chunk, in order, from torch's default generator."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, q, k, v, keys, p):
        b, h, tq, d = q.shape
        scale, keep_scale = d**-0.5, 1.0 / (1.0 - p)
        q3 = (q * scale).reshape(b * h, tq, d)  # (B·H, Tq, d), contiguous
        k3, v3 = k.reshape(b * h, -1, d), v.reshape(b * h, -1, d)  # (B·H, T, d)
        key_rows = None if keys is None else keys.expand(b, h, 1, -1).reshape(b * h, 1, -1)  # (B·H, 1, T)
        rng = torch.get_rng_state()
        out = torch.empty_like(q3)
        row_chunks, size = chunks(q3, k3.shape[1])
        masks, scores = MaskDraws(size, p, q3.device), q3.new_empty(size)
        for rows in row_chunks:
            probs = softmax_scores(q3[rows], k3[rows], key_rows, rows, scores)  # (n, Tq, T)
            torch.bmm(probs.mul_(masks.next(probs.shape)), v3[rows], out=out[rows])
        ctx.save_for_backward(q3, k3, v3, key_rows, rng)
        ctx.p, ctx.keep_scale, ctx.scale = p, keep_scale, scale
        return out.mul_(keep_scale).view(b, h, tq, d)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):  # grad (B, H, Tq, d)
        q3, k3, v3, key_rows, rng = ctx.saved_tensors
        b, h, tq, d = grad.shape
        g3 = grad.reshape(b * h, tq, d)
        generator = torch.Generator(device=q3.device)
        generator.set_state(rng)
        grad_q, grad_k, grad_v = torch.empty_like(q3), torch.empty_like(k3), torch.empty_like(v3)
        s = ctx.keep_scale
        row_chunks, size = chunks(q3, k3.shape[1])
        masks, scores, buffer = MaskDraws(size, ctx.p, q3.device, generator), q3.new_empty(size), q3.new_empty(size)
        for rows in row_chunks:
            probs = softmax_scores(q3[rows], k3[rows], key_rows, rows, scores)  # P, recomputed
            keep = masks.next(probs.shape)  # the forward's mask
            # dL/dP = s · (g vᵀ) on kept entries, 0 on dropped ones; dL/dS = P ⊙ (dL/dP − Σ_j P_ij dL/dP_ij)
            grad_p = torch.bmm(g3[rows], v3[rows].transpose(1, 2), out=buffer[: probs.numel()].view(probs.shape))
            grad_p.mul_(keep)  # dL/dP / s
            row_sum = torch.bmm(probs.view(-1, 1, probs.shape[-1]), grad_p.view(-1, grad_p.shape[-1], 1))
            grad_s = grad_p.sub_(row_sum.view(*probs.shape[:-1], 1)).mul_(probs)  # dL/dS / s
            torch.bmm(grad_s, k3[rows], out=grad_q[rows])
            torch.bmm(grad_s.transpose(1, 2), q3[rows], out=grad_k[rows])  # q3 carries the scale already
            torch.bmm(probs.mul_(keep).transpose(1, 2), g3[rows], out=grad_v[rows])  # (P ⊙ keep)ᵀ g
        return (
            grad_q.mul_(s * ctx.scale).view(b, h, tq, d),
            grad_k.mul_(s).view(b, h, -1, d),
            grad_v.mul_(s).view(b, h, -1, d),
            None,
            None,
        )


def chunks(q3: torch.Tensor, keys: int) -> tuple[list[slice], int]:
    """Slices of the B·H rows of q3 (B·H, Tq, d) with at most CHUNK_ELEMENTS scores (Tq × keys) each, and the
    number of scores in the largest slice (the buffers' size)."""
    step = min(q3.shape[0], max(1, CHUNK_ELEMENTS // (q3.shape[1] * keys)))
    return [slice(i, i + step) for i in range(0, q3.shape[0], step)], step * q3.shape[1] * keys


def softmax_scores(
    q3: torch.Tensor, k3: torch.Tensor, key_rows: torch.Tensor | None, rows: slice, buffer: torch.Tensor
) -> torch.Tensor:
    """softmax(q3 · k3ᵀ) over keys, q3 (n, Tq, d) already scaled, k3 (n, T, d) → (n, Tq, T) in the front of
    `buffer`; key_rows (B·H, 1, T) False where a key is padding (it gets probability 0), sliced to `rows`. Softmax
    runs in place (aten's row-wise kernel reads each row before writing it)."""
    n, tq, t = q3.shape[0], q3.shape[1], k3.shape[1]
    scores = torch.bmm(q3, k3.transpose(1, 2), out=buffer[: n * tq * t].view(n, tq, t))
    if key_rows is not None:
        scores.masked_fill_(~key_rows[rows], torch.finfo(scores.dtype).min)
    return torch.ops.aten._softmax.out(scores, -1, False, out=scores)
