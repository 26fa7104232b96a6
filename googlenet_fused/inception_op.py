"""The Triton backend of one inception module as a single torch.library op.

``googlenet_fused::inception_triton`` allocates the module output, channels_last whatever the
input's layout (the Triton GEMMs read and write pixel rows), and fills its four channel slices
in place: branch 1, the reductions and the pool projection (max pool in its operand load) from
one Triton GEMM launch that reads x once, the 3×3 and 5×5 branches from Triton implicit-GEMM
convolutions, each with its LRN + ReLU in the GEMM's epilogue (no pre-activation in memory, no
torch.cat). torch.compile and torch.export see one op (fake kernel below).

Training (``training=True``): the same launches also store each branch's pre-activation (conv +
bias, before LRN), returned with the reductions' outputs. The registered backward needs nothing
else: it recomputes no convolution, only the max pool the pool projection read (one pass over
x), and runs the LRN + ReLU backward of all four branches as one extension op. Saved per
module: the pre-activations (the output's size plus the reductions') and the reductions'
outputs, against a recompute of the module's forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from . import ops  # noqa: F401  (registers the extension ops the backward calls)
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
                     wp: torch.Tensor, bp: torch.Tensor, training: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                torch.Tensor, torch.Tensor]:
    """Inception module forward; w_red [c1 + c3r + c5r, Cin, 1, 1] stacks the 1×1 weights.

    Returns (out, u_1x1, u3, u5, red3, red5): the module output and, for the backward, the
    pre-activations of the 1×1 launch ([c1 | c3r | c5r | cp] channels), of the 3×3 and the 5×5
    branches, and the reductions' outputs. Without ``training`` the pre-activations are not
    stored (empty tensors)."""
    from .kernels.conv_lrn_relu import conv_lrn_relu, reductions_1x1

    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    N, _, H, W = x.shape
    x = x.contiguous(memory_format=torch.channels_last)  # once, for every launch

    def new(channels):
        return torch.empty((N, channels, H, W) if training else (0,), device=x.device,
                           dtype=x.dtype, memory_format=torch.channels_last if training else
                           torch.contiguous_format)

    out = torch.empty((N, c1 + c3 + c5 + cp, H, W), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last)
    u_1x1, u3, u5 = new(c1 + c3r + c5r + cp), new(c3), new(c5)
    saved = dict(preactivation=u_1x1) if training else {}
    red3, red5 = reductions_1x1(x, w_red, b_red, (c1, c3r, c5r), out.narrow(1, 0, c1), LRN,
                                pool_weight=wp, pool_bias=bp,
                                out_pool=out.narrow(1, c1 + c3 + c5, cp), **saved)
    conv_lrn_relu(red3, w3, b3, out.narrow(1, c1, c3), LRN, u3 if training else None)
    conv_lrn_relu(red5, w5, b5, out.narrow(1, c1 + c3, c5), LRN, u5 if training else None)
    return out, u_1x1, u3, u5, red3, red5


@inception_triton.register_fake
def _(x, w_red, b_red, w3, b3, w5, b5, wp, bp, training=False):
    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    N, _, H, W = x.shape

    def new(channels, always=False):
        if training or always:
            return x.new_empty((N, channels, H, W)).contiguous(memory_format=torch.channels_last)
        return x.new_empty((0,))

    return (new(c1 + c3 + c5 + cp, always=True), new(c1 + c3r + c5r + cp), new(c3), new(c5),
            new(c3r, always=True), new(c5r, always=True))


def _setup_context(ctx, inputs, output):
    x, w_red, b_red, w3, b3, w5, b5, wp, bp, *training = inputs
    ctx.training = bool(training and training[0])
    _, u_1x1, u3, u5, red3, red5 = output
    ctx.mark_non_differentiable(u_1x1, u3, u5, red3, red5)
    ctx.save_for_backward(x, w_red, w3, w5, wp, u_1x1, u3, u5, red3, red5)


def _backward(ctx, grad, *_):
    if not ctx.training:
        raise RuntimeError("inception_triton was called with training=False: its backward "
                           "needs the pre-activations that training=True stores")
    x, w_red, w3, w5, wp, u_1x1, u3, u5, red3, red5 = ctx.saved_tensors
    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    grad = grad.to(x.dtype)
    u1, u3r, u5r, up = u_1x1.split([c1, c3r, c5r, cp], 1)
    lrn_backward = torch.ops.googlenet_fused.lrn_relu_concat_backward
    gu1, gu3, gu5, gup = lrn_backward(grad, [u1, u3, u5, up], *LRN, True)
    gw3 = conv2d_weight(red3, w3.shape, gu3, padding=1)
    gw5 = conv2d_weight(red5, w5.shape, gu5, padding=2)
    (gu3r,) = lrn_backward(conv2d_input(red3.shape, w3, gu3, padding=1), [u3r], *LRN, True)
    (gu5r,) = lrn_backward(conv2d_input(red5.shape, w5, gu5, padding=2), [u5r], *LRN, True)
    gz = torch.cat([gu1, gu3r, gu5r], 1)  # the merged 1×1s: one GEMM per gradient
    pooled, indices = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    gpooled = conv2d_input(pooled.shape, wp, gup)
    gx = conv2d_input(x.shape, w_red, gz) + torch.ops.aten.max_pool2d_with_indices_backward(
        gpooled, x, [3, 3], [1, 1], [1, 1], [1, 1], False, indices)
    sum_nhw = (0, 2, 3)
    grads = (gx, conv2d_weight(x, w_red.shape, gz), gz.sum(sum_nhw), gw3, gu3.sum(sum_nhw),
             gw5, gu5.sum(sum_nhw), conv2d_weight(pooled, wp.shape, gup), gup.sum(sum_nhw))
    return grads + (None,) * (len(ctx.needs_input_grad) - len(grads))


inception_triton.register_autograd(_backward, setup_context=_setup_context)
