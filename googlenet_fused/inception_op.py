"""The Triton backend of one inception module as a single torch.library op.

``googlenet_fused::inception_triton`` allocates the module output, channels_last whatever the
input's layout (the Triton GEMMs read and write pixel rows), and fills its four channel slices
in place: branch 1, the reductions and the pool projection (max pool in its operand load) from
one Triton GEMM launch that reads x once, the 3×3 and 5×5 branches from Triton implicit-GEMM convolutions, each with its
LRN + ReLU in the GEMM's epilogue (no pre-activation in memory, no torch.cat). torch.compile and torch.export see one op (fake kernel below); training works
through a registered backward formula that recomputes the intermediates (convolutions included)
and runs the LRN + ReLU backward of all four branches as one extension op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from . import ops
from .reference import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE

LRN = (LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is stored that way, else NCHW-contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def channel_plan(w_red, w3, w5, wp):
    """(c1, c3r, c5r, c3, c5, cp) read off the weights; w_red stacks the three 1×1 weights."""
    c3r, c5r = w3.shape[1], w5.shape[1]
    return w_red.shape[0] - c3r - c5r, c3r, c5r, w3.shape[0], w5.shape[0], wp.shape[0]


@torch.library.custom_op("googlenet_fused::inception_triton", mutates_args=())
def inception_triton(x: torch.Tensor, w_red: torch.Tensor, b_red: torch.Tensor,
                     w3: torch.Tensor, b3: torch.Tensor, w5: torch.Tensor, b5: torch.Tensor,
                     wp: torch.Tensor, bp: torch.Tensor) -> torch.Tensor:
    """Inception module forward; w_red [c1 + c3r + c5r, Cin, 1, 1] stacks the 1×1 weights."""
    from .kernels.conv_lrn_relu import conv_lrn_relu, reductions_1x1

    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    N, _, H, W = x.shape
    x = x.contiguous(memory_format=torch.channels_last)  # once, for both GEMMs
    out = torch.empty((N, c1 + c3 + c5 + cp, H, W), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last)
    red3, red5 = reductions_1x1(x, w_red, b_red, (c1, c3r, c5r), out.narrow(1, 0, c1), LRN,
                                pool_weight=wp, pool_bias=bp,
                                out_pool=out.narrow(1, c1 + c3 + c5, cp))
    conv_lrn_relu(red3, w3, b3, out.narrow(1, c1, c3), LRN)
    conv_lrn_relu(red5, w5, b5, out.narrow(1, c1 + c3, c5), LRN)
    return out


@inception_triton.register_fake
def _(x, w_red, b_red, w3, b3, w5, b5, wp, bp):
    c1, _, _, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    N, _, H, W = x.shape
    return x.new_empty((N, c1 + c3 + c5 + cp, H, W)).contiguous(memory_format=torch.channels_last)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    x, w_red, b_red, w3, b3, w5, b5, wp, bp = ctx.saved_tensors
    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    grad = grad.to(x.dtype)
    # Recompute the pre-activations (cheap next to the convolutions' backward).
    z = F.conv2d(x, w_red, b_red)
    u1, u3r, u5r = z.split([c1, c3r, c5r], 1)
    red3, red5 = ops.lrn_relu(u3r, *LRN), ops.lrn_relu(u5r, *LRN)
    u3 = F.conv2d(red3, w3, b3, padding=1)
    u5 = F.conv2d(red5, w5, b5, padding=2)
    pooled, indices = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    up = F.conv2d(pooled, wp, bp)

    lrn_backward = torch.ops.googlenet_fused.lrn_relu_concat_backward
    gu1, gu3, gu5, gup = lrn_backward(grad, [u1, u3, u5, up], *LRN, True)
    gw3 = conv2d_weight(red3, w3.shape, gu3, padding=1)
    gw5 = conv2d_weight(red5, w5.shape, gu5, padding=2)
    (gu3r,) = lrn_backward(conv2d_input(red3.shape, w3, gu3, padding=1), [u3r], *LRN, True)
    (gu5r,) = lrn_backward(conv2d_input(red5.shape, w5, gu5, padding=2), [u5r], *LRN, True)
    gz = torch.cat([gu1, gu3r, gu5r], 1)
    gpooled = conv2d_input(pooled.shape, wp, gup)
    gx = conv2d_input(x.shape, w_red, gz) + torch.ops.aten.max_pool2d_with_indices_backward(
        gpooled, x, [3, 3], [1, 1], [1, 1], [1, 1], False, indices)
    sum_nhw = (0, 2, 3)
    return (gx, conv2d_weight(x, w_red.shape, gz), gz.sum(sum_nhw), gw3, gu3.sum(sum_nhw),
            gw5, gu5.sum(sum_nhw), conv2d_weight(pooled, wp.shape, gup), gup.sum(sum_nhw))


inception_triton.register_autograd(_backward, setup_context=_setup_context)
