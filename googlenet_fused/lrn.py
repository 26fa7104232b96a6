"""LocalResponseNorm + ReLU in plain PyTorch: the window sums and the backward formula, written
as ATen ops. The extension's lrn_relu_concat_backward computes the same in one pass; this is its
reference in the tests and its baseline in the benchmarks.

Forward, per branch ``a`` of shape [N, C, H, W] (PyTorch's formula, window clipped to the branch):
    d_c = k + alpha/size * sum_{j = c - size//2}^{c + (size-1)//2} a_j^2
    y_c = relu(a_c * d_c^-beta)
Backward, with g = dL/dy masked by (y > 0) (not masked without the ReLU):
    dL/da_i = g_i d_i^-beta - (2 alpha beta / size) a_i sum_{c: i in window(c)} g_c a_c d_c^(-beta-1)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def channel_window_sum(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """out[:, c] = sum of t[:, c - before : c + after + 1], zeros beyond the channel edges."""
    padded = F.pad(t, (0, 0, 0, 0, before, after))
    channels = t.shape[1]
    out = padded.narrow(1, 0, channels)
    for shift in range(1, before + after + 1):
        out = out + padded.narrow(1, shift, channels)
    return out


def lrn_relu_backward(grad_y: torch.Tensor, a: torch.Tensor, y: torch.Tensor, size: int,
                      alpha: float, beta: float, k: float, relu: bool = True) -> torch.Tensor:
    """Gradient of ``relu(local_response_norm(a))`` (of ``local_response_norm(a)`` with
    ``relu=False``) w.r.t. ``a``; ``y`` is the forward output."""
    dtype = a.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    a, grad_y = a.to(acc), grad_y.to(acc)
    d = k + (alpha / size) * channel_window_sum(a * a, size // 2, (size - 1) // 2)
    scale = d.pow(-beta)
    g = grad_y
    if relu:
        g = torch.where(y > 0, grad_y, torch.zeros((), dtype=acc, device=a.device))
    t = g * a * scale / d
    grad_a = g * scale - (2.0 * alpha * beta / size) * a * channel_window_sum(
        t, (size - 1) // 2, size // 2)
    return grad_a.to(dtype)
