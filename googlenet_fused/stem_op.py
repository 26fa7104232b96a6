"""GoogLeNet's stem convolutions with what follows them, one Triton launch each (inference).

``googlenet_fused::stem_conv_triton`` is lrn(relu(conv2d(x, weight, bias, padding=KS // 2)))
(or relu(conv2d(...)) with ``lrn_size`` 0): the stem's 1×1 (ReLU) and 3×3 (ReLU, then LRN)
as implicit GEMMs with bias, ReLU and LRN in the epilogue, so none of them is a pass over
memory of its own (cuDNN adds the bias in a separate kernel, then the ReLU and the LRN each
read and write the activation). The output is channels_last. It has no backward: a module
that needs gradients runs ATen's convolution and the ReLU / LRN modules instead
(modules.FusedStemConv).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def stem_conv_fits(conv: nn.Conv2d) -> bool:
    """Whether :func:`stem_conv_triton` can run ``conv``: stride 1, an odd square kernel with
    "same" zero padding, no groups or dilation."""
    ks = conv.kernel_size[0]
    return (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.kernel_size == (ks, ks) and ks % 2 == 1
            and conv.padding == (ks // 2, ks // 2) and conv.padding_mode == "zeros")


def _new(x, weight):
    N, _, H, W = x.shape
    return torch.empty((N, weight.shape[0], H, W), device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last)


@torch.library.custom_op("googlenet_fused::stem_conv_triton", mutates_args=())
def stem_conv_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lrn_size: int,
                     alpha: float, beta: float, k: float) -> torch.Tensor:
    """lrn(relu(conv2d(x, weight, bias, padding=KS // 2))), stride 1, odd square KS; no LRN when
    ``lrn_size`` is 0."""
    from .kernels.conv_lrn_relu import conv_lrn_relu

    out = _new(x, weight)
    lrn = (lrn_size, alpha, beta, k) if lrn_size else None
    conv_lrn_relu(x, weight, bias, out, lrn, relu_first=True)
    return out


@stem_conv_triton.register_fake
def _(x, weight, bias, lrn_size, alpha, beta, k):
    return _new(x, weight)
