"""One inception module as one torch.library op per backend, both following one data flow.

The module's data flow is written once, here (:func:`module_forward`, :func:`_backward`); a
backend only says which kernel runs each step (:class:`TritonSteps`, :class:`NativeSteps`).

Forward, into one output (channels_last, or NCHW with ``nchw_out``) whose four channel slices
the branches fill in place (no torch.cat):

1. What reads x: the 1×1 branch and the 3×3 / 5×5 reductions as one GEMM over their stacked
   weights, and the pool projection over max_pool3x3(x); each with bias + LRN + ReLU. The 1×1
   and pool branches land in their output slices, the reductions in two new tensors.
2. The 3×3 and 5×5 convolutions over the reductions, with bias + LRN + ReLU, into their slices.

``lrn=False`` leaves the LRN out (conv + bias + ReLU in every step): torchvision's GoogLeNet
with its BatchNorm folded into the convolutions (googlenet_fused.torchvision_googlenet). That
form is for inference only: a BatchNorm that trains cannot be folded.

Triton runs step 1 as one launch (max pool in the operand load, x read once) and each
convolution of step 2 as one implicit GEMM, LRN + ReLU in the epilogues. Native runs ATen
convolutions and the extension's LRN + ReLU op writing into the slices.

Training (``training=True``): each step also returns its pre-activations (conv + bias, before
LRN; without the bias where the native backend adds it in the LRN op instead, see
backends.fold_bias) and the reductions' outputs, and the native backend the pooled x, with its
taps (which window position each maximum came from, one byte each) where ``input_grad`` says
x's gradient will be needed. The backward, shared, recomputes no convolution: LRN + ReLU
backward of the four branches in one extension pass, each convolution's input / weight / bias
gradients in one ATen call, the merged 1×1s as one GEMM per gradient, and the max pool's routing
from the taps, added to the 1×1s' input gradient in the same pass (the pooling is recomputed
only where the forward kept no taps: Triton pooled in registers).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import backends, ops, prepacked
from .reference import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE

LRN = (LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)
# (out, u_red, u_pool, u3, u5, red3, red5, pooled, taps): see module_forward.
OUTPUTS = 9


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when ``x`` is stored that way, else NCHW-contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def params_key(tensors) -> tuple:
    """What identifies the values of ``tensors`` for a cache of tensors computed from them: an
    in-place update bumps a tensor's version, ``.to()`` and ``load_state_dict`` (which copies in
    place) change its storage or version too."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


class DerivedTensors:
    """A cache of tensors computed from others (stacked 1×1 weights, channels_last copies,
    folded BatchNorm), recomputed whenever a source tensor changes (params_key) or ``extra``
    does. Under torch.compile nothing is cached: the computation belongs in the graph."""

    def __init__(self):
        self.key, self.value = None, None

    def get(self, sources, make, extra=()):
        if torch.compiler.is_compiling():
            return make()
        key = (params_key(sources), extra)
        if self.key != key:
            with torch.no_grad():
                self.key, self.value = key, make()
        return self.value


def needs_grad(x: torch.Tensor, params) -> bool:
    """Whether autograd will want gradients through a call on ``x`` with ``params``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params))


def run_fused(backend, x, params, training, lrn=True, packs=None):
    """One fused inception module (``params`` as module_forward takes them) on ``backend``
    ("triton" or "native"), returning its output in x's memory format.

    With ``packs`` (the module's prepacked.ConvPacks), native inference on CPU outside
    torch.compile runs module_forward directly with prepacked weights: no graph to capture, so
    no op (and none of its dispatch cost at batch 1).

    channels_last before the op, where autograd sees it: the op saves the converted input for
    its weight gradients (no conversion in the backward). An NCHW output is written in place
    where the backend can (backends.writes_nchw_output), else converted afterwards."""
    layout = layout_of(x)
    op = inception_triton if backend == "triton" else inception_native
    x_cl = x.contiguous(memory_format=torch.channels_last)
    nchw_out = layout == torch.contiguous_format and backends.writes_nchw_output(backend, x)
    if (backend == "native" and packs is not None and not training
            and prepacked.applies(x_cl)):
        out = module_forward(NativeSteps(packs), x_cl, *params, False, False, nchw_out, lrn)[0]
    else:
        out = op(x_cl, *params, training, x.requires_grad, nchw_out, lrn)[0]
    return out.contiguous(memory_format=layout)  # no copy when it already is


def channel_plan(w_red, w3, w5, wp):
    """(c1, c3r, c5r, c3, c5, cp) read off the weights; w_red stacks the three 1×1 weights."""
    c3r, c5r = w3.shape[1], w5.shape[1]
    return w_red.shape[0] - c3r - c5r, c3r, c5r, w3.shape[0], w5.shape[0], wp.shape[0]


class TritonSteps:
    """Each step one Triton launch: conv + bias + LRN + ReLU, stored into its destinations."""

    name = "triton"
    keeps_pooled = False  # the pooling happens in the GEMM's operand load

    @staticmethod
    def folds_bias(x):
        return False

    @staticmethod
    def reads_x(x, w_red, b_red, wp, bp, sizes, out1, out_pool, training, keep_taps, lrn):
        from .kernels.conv_lrn_relu import reductions_1x1

        u_red, u_pool = (_new_like(x, sum(sizes)), _new_like(x, wp.shape[0])) if training else (
            None, None)
        red3, red5 = reductions_1x1(x, w_red, b_red, sizes, out1, lrn, pool_weight=wp,
                                    pool_bias=bp, out_pool=out_pool, preactivation=u_red,
                                    pool_preactivation=u_pool)
        return u_red, u_pool, red3, red5, None, None

    @staticmethod
    def branch(red, w, b, out, training, lrn):
        from .kernels.conv_lrn_relu import conv_lrn_relu

        u = _new_like(red, w.shape[0]) if training else None
        conv_lrn_relu(red, w, b, out, lrn, u)
        return u


class NativeSteps:
    """ATen convolutions (oneDNN, cuDNN) and the extension's LRN + ReLU writing into slices;
    with ``packs`` (eager CPU inference, see googlenet_fused.prepacked) the convolutions run
    oneDNN with weights prepacked once."""

    name = "native"
    keeps_pooled = True

    def __init__(self, packs: prepacked.ConvPacks | None = None):
        self.packs = packs

    @staticmethod
    def folds_bias(x):
        return backends.fold_bias(x)

    @staticmethod
    def _epilogue(out, u, b, fold, lrn):
        """LRN + ReLU of ``u`` (+ ``b`` when the convolution left it out) into ``out``; with
        ``lrn`` None the ReLU alone (the convolution added the bias)."""
        if lrn is None:
            torch.clamp_min(u, 0, out=out)  # NaN stays NaN, as in ReLU
        else:
            torch.ops.googlenet_fused.lrn_relu_concat_into(out, [u], *lrn, True,
                                                           [b] if fold else None)

    def _conv(self, inp, w, b, lrn, padding=0):
        """conv (+ bias unless the LRN op adds it) as a channels_last tensor; returns (it,
        whether the bias was left to the LRN op)."""
        fold = lrn is not None and backends.fold_bias(inp)
        bias = None if fold else b
        # run_fused gave packs after checking x (prepacked.applies): every input here has its
        # device and dtype and is channels_last
        u = (self.packs.conv(inp, w, bias, padding) if self.packs is not None
             else F.conv2d(inp, w, bias, padding=padding))
        return _channels_last(u), fold

    def _conv_lrn_relu(self, inp, w, b, out, lrn, padding=0):
        """conv → (bias) → LRN + ReLU into ``out``; returns the pre-activation."""
        u, fold = self._conv(inp, w, b, lrn, padding)
        self._epilogue(out, u, b, fold, lrn)
        return u

    def reads_x(self, x, w_red, b_red, wp, bp, sizes, out1, out_pool, training, keep_taps, lrn):
        u_red, fold = self._conv(x, w_red, b_red, lrn)
        red3, red5 = _new_like(x, sizes[1]), _new_like(x, sizes[2])
        for out, u, b in zip((out1, red3, red5), u_red.split(sizes, 1), b_red.split(sizes)):
            self._epilogue(out, u, b, fold, lrn)
        pooled, taps = ops.max_pool3x3_with_taps(x) if keep_taps else (ops.max_pool3x3(x), None)
        u_pool = self._conv_lrn_relu(pooled, wp, bp, out_pool, lrn)
        return u_red, u_pool, red3, red5, pooled, taps

    def branch(self, red, w, b, out, training, lrn):
        return self._conv_lrn_relu(red, w, b, out, lrn, padding=w.shape[-1] // 2)


def _new_like(x, channels):
    N, _, H, W = x.shape
    return torch.empty((N, channels, H, W), device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last)


def _new_output(x, channels, nchw):
    """The module output: channels_last, or NCHW-contiguous with ``nchw`` (the branches,
    channels_last, are written into its slices as the backend can: the CPU LRN kernel stores
    transposed, a Triton launch through a copy)."""
    if not nchw:
        return _new_like(x, channels)
    N, _, H, W = x.shape
    return torch.empty((N, channels, H, W), device=x.device, dtype=x.dtype)


def _channels_last(t):
    """``t`` with the strides of a new channels_last tensor (what the fake kernel promises):
    ATen's convolution keeps NCHW strides where its input has one channel."""
    new = _new_like(t, t.shape[1])
    return t if t.stride() == new.stride() else new.copy_(t)


def module_forward(steps, x, w_red, b_red, w3, b3, w5, b5, wp, bp, training=False,
                   input_grad=True, nchw_out=False, lrn=True):
    """The module's forward as ``steps`` runs it; returns (out, u_red, u_pool, u3, u5, red3,
    red5, pooled, taps): the output (channels_last, or NCHW-contiguous with ``nchw_out``) and,
    with ``training``, what the backward needs (empty tensors otherwise; ``pooled`` only from a
    backend that keeps it, and its ``taps`` (ops.max_pool3x3_with_taps) only where
    ``input_grad`` says x's gradient will be needed: the pool branch's routing is the only
    use). ``lrn=False``: conv + bias + ReLU in every step, inference only."""
    if training and not lrn:
        raise ValueError("inception op: lrn=False is for inference (training=False); its "
                         "backward is the LRN's")
    lrn = LRN if lrn else None
    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    x = x.contiguous(memory_format=torch.channels_last)  # once, for every step
    out = _new_output(x, c1 + c3 + c5 + cp, nchw_out)
    # 1. What reads x: 1×1 branch, both reductions, pool projection.
    u_red, u_pool, red3, red5, pooled, taps = steps.reads_x(
        x, w_red, b_red, wp, bp, (c1, c3r, c5r), out.narrow(1, 0, c1),
        out.narrow(1, c1 + c3 + c5, cp), training, training and input_grad, lrn)
    # 2. The 3×3 and 5×5 over the reductions.
    u3 = steps.branch(red3, w3, b3, out.narrow(1, c1, c3), training, lrn)
    u5 = steps.branch(red5, w5, b5, out.narrow(1, c1 + c3, c5), training, lrn)
    saved = (u_red, u_pool, u3, u5, red3, red5, pooled, taps)
    if not training:  # only out; the reductions are kept for the fake kernel's sake
        saved = (None, None, None, None, red3, red5, None, None)
    return (out, *(t if t is not None else x.new_empty(0) for t in saved))


def _fake(steps, x, w_red, b_red, w3, b3, w5, b5, wp, bp, training=False, input_grad=True,
          nchw_out=False, lrn=True):
    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)

    def new(channels, keep=True, dtype=None):  # what module_forward returns, empty or kept
        return _new_like(x, channels).to(dtype or x.dtype) if keep else x.new_empty(0)

    kept = training and steps.keeps_pooled
    return (_new_output(x, c1 + c3 + c5 + cp, nchw_out), new(c1 + c3r + c5r, training),
            new(cp, training), new(c3, training), new(c5, training), new(c3r), new(c5r),
            new(x.shape[1], kept), new(x.shape[1], kept and input_grad, ops.pool_taps_dtype(x)))


def _setup_context(ctx, inputs, output):
    x, w_red, b_red, w3, b3, w5, b5, wp, bp, *flags = inputs  # defaults may be absent
    ctx.training = bool(flags and flags[0])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the outputs kept for backward
    ctx.save_for_backward(x, w_red, b_red, w3, b3, w5, b5, wp, bp, *output[1:])


def _conv_backward(grad, inp, weight, needs, padding=0):
    """(input, weight, bias) gradients of conv2d(inp, weight, bias, padding); None where
    ``needs`` (three bools) says not needed. On CPU a 1×1 convolution's are GEMMs over the
    pixel rows of the channels_last tensors (input: grad @ W, weight: gradᵀ @ inp, bias:
    column sums in fp32 at least), in its weight's layout: oneDNN's convolution backward runs
    the same GEMMs but reorders around them and converts the weight gradient (the network's
    merged 1×1s at batch 8: 0.1-0.8 ms more per call). Other kernels, and CUDA (where fp32
    convolutions follow torch.backends.cudnn's precision setting, not matmul's, as the
    reference's do): one ATen call."""
    if not any(needs):
        return None, None, None
    if weight.shape[-2:] != (1, 1) or padding or grad.device.type != "cpu":
        return torch.ops.aten.convolution_backward(grad, inp, weight, [weight.shape[0]], [1, 1],
                                                   [padding, padding], [1, 1], False, [0, 0],
                                                   1, list(needs))

    def rows(t):  # [N·H·W, C]: a view of a channels_last tensor
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])

    g, w = rows(grad), weight.reshape(weight.shape[:2])
    N, cin, H, W = inp.shape
    gx = torch.mm(g, w).view(N, H, W, cin).permute(0, 3, 1, 2) if needs[0] else None
    gw = torch.mm(g.t(), rows(inp)).view(weight.shape) if needs[1] else None
    gb = g.sum(0, dtype=torch.promote_types(g.dtype, torch.float32)).to(g.dtype) if needs[2] \
        else None
    return gx, gw, gb


def _backward(ctx, grad, *_):
    if not ctx.training:
        raise RuntimeError("this inception op was called with training=False: its backward "
                           "needs the pre-activations that training=True returns")
    (x, w_red, b_red, w3, b3, w5, b5, wp, bp,
     u_red, u_pool, u3, u5, red3, red5, pooled, taps) = ctx.saved_tensors
    need = ctx.needs_input_grad
    if grad is None:  # nothing reached the module output (gradients are not materialized)
        return (None,) * len(need)
    c1, c3r, c5r, c3, c5, cp = channel_plan(w_red, w3, w5, wp)
    x = x.contiguous(memory_format=torch.channels_last)  # as the forward read it
    grad = grad.to(x.dtype)
    # Where the pre-activations lack the bias (folded into the forward's LRN op), the LRN
    # backward adds it back.
    fold = ctx.folds_bias
    b1, b3r, b5r = b_red.split([c1, c3r, c5r])

    def bias(*b):
        return list(b) if fold else None

    u1, u3r, u5r = u_red.split([c1, c3r, c5r], 1)
    # The merged 1×1s' pre-activation gradient, one GEMM per gradient: its three slices are
    # written in place by the LRN backward calls (no concatenation).
    gz = torch.empty_like(u_red)
    gu1, gu3r, gu5r = gz.split([c1, c3r, c5r], 1)
    gu3, gu5, gup = torch.empty_like(u3), torch.empty_like(u5), torch.empty_like(u_pool)
    lrn_into = torch.ops.googlenet_fused.lrn_relu_concat_backward_into
    lrn_into([gu1, gu3, gu5, gup], grad, [u1, u3, u5, u_pool], *LRN, True, bias(b1, b3, b5, bp))
    reduction_needed = need[0] or need[1] or need[2]
    gred3, gw3, gb3 = _conv_backward(gu3, red3, w3, (reduction_needed, need[3], need[4]), 1)
    gred5, gw5, gb5 = _conv_backward(gu5, red5, w5, (reduction_needed, need[5], need[6]), 2)
    gx = gw_red = gb_red = None
    if reduction_needed:
        lrn_into([gu3r], gred3, [u3r], *LRN, True, bias(b3r))
        lrn_into([gu5r], gred5, [u5r], *LRN, True, bias(b5r))
        gx, gw_red, gb_red = _conv_backward(gz, x, w_red, need[:3])
    # Triton pooled in registers; the native backend kept no taps where the forward was told
    # x's gradient would not be needed.
    if need[0] and taps.numel() == 0:
        pooled, taps = ops.max_pool3x3_with_taps(x)
    elif need[7] and pooled.numel() == 0:
        pooled = ops.max_pool3x3(x)
    gpooled, gwp, gbp = _conv_backward(gup, pooled, wp, (need[0], need[7], need[8]))
    if need[0]:  # the pool branch's input gradient, added to gx in the same pass
        ops.max_pool3x3_backward(gpooled, x, taps, accumulate_into=gx)
    grads = (gx, gw_red, gb_red, gw3, gb3, gw5, gb5, gwp, gbp)
    return grads + (None,) * (len(ctx.needs_input_grad) - len(grads))


_SCHEMA = ("(Tensor x, Tensor w_red, Tensor b_red, Tensor w3, Tensor b3, Tensor w5, Tensor b5, "
           "Tensor wp, Tensor bp, bool training=False, bool input_grad=True, "
           "bool nchw_out=False, bool lrn=True) -> ("
           + ", ".join(["Tensor"] * OUTPUTS) + ")")


def _define(steps):
    """googlenet_fused::inception_<steps.name>: module_forward with ``steps``, its fake kernel
    and the shared backward."""

    def forward(*args):
        return module_forward(steps, *args)

    op = torch.library.custom_op(f"googlenet_fused::inception_{steps.name}", forward,
                                 mutates_args=(), schema=_SCHEMA)
    op.register_fake(lambda *args: _fake(steps, *args))

    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)
        ctx.folds_bias = steps.folds_bias(inputs[0])

    op.register_autograd(_backward, setup_context=setup_context)
    return op


inception_triton = _define(TritonSteps)
inception_native = _define(NativeSteps())
