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


def random_int16(shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform int16 in [-32768, 32767], four per 64-bit number drawn from torch's default generator."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)  # 64 random bits
    return words.view(torch.int16)[:n].view(shape)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout(x, p, training). On the CPU the keep mask is drawn 16 bits per element, so p is rounded to a
    multiple of 1/65536 (0.1 → 0.100006); elsewhere it is F.dropout itself."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x.mul(keep_mask(x.shape, p, x.device)).mul_(1.0 / (1.0 - p))


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """1 where an element is kept (probability 1 − p, rounded to 1/65536), else 0, as uint8: one byte per element,
    and float × uint8 runs several times faster on the CPU than masked_fill or where with a bool mask."""
    return (random_int16(shape, device) >= _INT16_LOW + round(p * 65536)).view(torch.uint8)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor | None, p: float, training: bool
) -> torch.Tensor:
    """Softmax attention: q (B, H, Tq, d), k and v (B, H, T, d), keys (B, 1, 1, T) bool (True: a real token) or
    None (all real) → (B, H, Tq, d), with dropout p on the attention probabilities in training."""
    p = p if training else 0.0
    if p == 0.0 or q.device.type != "cpu":  # fused kernels: flash / memory-efficient, with dropout on CUDA
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=p)
    return DropoutAttention.apply(q, k, v, keys, p)


class DropoutAttention(torch.autograd.Function):
    """CPU attention with dropout on the probabilities, by hand: it keeps the probabilities and the 1-byte keep mask
    for backward, not the dropped probabilities as well (recomputed there in one pass), and reuses its (B, H, Tq, T)
    buffers in place: (B, H, Tq, T) tensors are most of a long sequence's step."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, q, k, v, keys, p):
        scale = q.shape[-1] ** -0.5
        probs = torch.matmul(q * scale, k.transpose(-2, -1))  # (B, H, Tq, T) scores
        if keys is not None:
            probs.masked_fill_(~keys, torch.finfo(probs.dtype).min)
        probs = probs.softmax(-1)
        keep = keep_mask(probs.shape, p, probs.device)
        ctx.save_for_backward(q, k, v, probs, keep)
        ctx.scale, ctx.keep_scale = scale, 1.0 / (1.0 - p)
        return torch.matmul(probs.mul(keep).mul_(ctx.keep_scale), v)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):  # grad (B, H, Tq, d)
        q, k, v, probs, keep = ctx.saved_tensors
        buffer = probs.mul(keep).mul_(ctx.keep_scale)  # the dropped probabilities, then the gradient through them
        grad_v = torch.matmul(grad.transpose(-2, -1), buffer).transpose(-2, -1)  # transposes of (d, T), not (T, T)
        grad_probs = torch.matmul(grad, v.transpose(-2, -1), out=buffer).mul_(keep).mul_(ctx.keep_scale)
        # through softmax: probs · (g − Σ probs · g), in place
        grad_probs.mul_(probs)
        grad_scores = grad_probs.addcmul_(probs, grad_probs.sum(-1, keepdim=True), value=-1.0)
        grad_q = torch.matmul(grad_scores, k).mul_(ctx.scale)
        grad_k = torch.matmul(q.transpose(-2, -1), grad_scores).transpose(-2, -1).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None, None
