"""The extension's ops (``torch.ops.googlenet_fused.lrn_relu_concat[_into]`` and the CPU
``max_pool3x3[_with_taps]``): fake kernels for torch.compile / export, autograd, and Python
wrappers that say clearly when the extension is missing. Importing this module never fails
because the extension is missing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE

try:
    from . import _C  # noqa: F401  (registers the ops)

    EXTENSION_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on how the package was built
    EXTENSION_ERROR = f"{type(exc).__name__}: {exc}"

BUILD_HINT = ("build it from the repository root with "
              "`pip install --no-build-isolation -e .` (torch must be installed first)")


def extension_available() -> bool:
    """Whether googlenet_fused._C (the C++/CUDA extension) was built and imported."""
    return EXTENSION_ERROR is None


def has_cuda_kernels() -> bool:
    """Whether the extension was built with its CUDA kernels."""
    return extension_available() and torch._C._dispatch_has_kernel_for_dispatch_key(
        "googlenet_fused::lrn_relu_concat", "CUDA")


def require_extension(op: str) -> None:
    """Raise a RuntimeError that names ``op``, why it is missing, and how to build it."""
    if EXTENSION_ERROR is not None:
        raise RuntimeError(f"googlenet_fused: the op {op} needs the compiled extension "
                           f"googlenet_fused._C, which could not be imported ({EXTENSION_ERROR}); "
                           f"{BUILD_HINT}")


def _output_layout(first: torch.Tensor) -> torch.memory_format:
    # Mirrors output_format() in csrc/layout.h.
    cl = first.shape[1] > 1 and first.stride(1) == 1 and first.shape[2] * first.shape[3] > 1
    return torch.channels_last if cl else torch.contiguous_format


def lrn_relu_concat(branches, size: int = LRN_SIZE, alpha: float = LRN_ALPHA,
                    beta: float = LRN_BETA, k: float = LRN_K, *, relu: bool = True,
                    bias=None, out: torch.Tensor | None = None):
    """relu(local_response_norm(b)) of each branch ``b`` [N, C_i, H, W], concatenated on channels.

    One pass over memory; the LRN window stays inside each branch. ``relu=False`` leaves the
    ReLU out (plain LocalResponseNorm, signed values kept). ``bias`` (one [C_i] tensor per
    branch) is added to each branch first, so the convolution before it can run without its
    bias (on CUDA that saves cuDNN's separate bias pass); gradients flow to it. With ``out`` (shape
    [N, sum C_i, H, W], may be a channel slice of a bigger tensor) the result is written there
    and ``out`` is returned; ``out`` does not support autograd. Without it, a new tensor is
    returned (channels_last when the first branch is) and gradients flow to every branch.
    """
    require_extension("googlenet_fused::lrn_relu_concat")
    branches = list(branches)
    if not branches:  # the dispatcher cannot even route an empty list to a device
        raise ValueError("lrn_relu_concat: expected at least one branch, got an empty list")
    bias = None if bias is None else list(bias)
    if out is None:
        return torch.ops.googlenet_fused.lrn_relu_concat(branches, size, alpha, beta, k, relu,
                                                         bias)
    torch.ops.googlenet_fused.lrn_relu_concat_into(out, branches, size, alpha, beta, k, relu, bias)
    return out


def lrn_relu(x: torch.Tensor, size: int = LRN_SIZE, alpha: float = LRN_ALPHA,
             beta: float = LRN_BETA, k: float = LRN_K, *, bias: torch.Tensor | None = None,
             out: torch.Tensor | None = None):
    """relu(local_response_norm(x + bias)) of one tensor, fused (``bias`` [C] optional; ``out``
    as in :func:`lrn_relu_concat`)."""
    return lrn_relu_concat([x], size, alpha, beta, k, bias=None if bias is None else [bias],
                           out=out)


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """``F.local_response_norm`` of a 4-D tensor in one pass (the extension's kernel, no ReLU)."""
    return lrn_relu_concat([x], size, alpha, beta, k, relu=False)


def pooled_size(size, stride: int, padding: int, ceil_mode: bool):
    """The output size of a 3×3 max pooling along an axis of ``size`` pixels, as ATen computes
    it (mirrors pooled_size() in csrc/max_pool3x3.cpp)."""
    out = (size + 2 * padding - 3 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return max(out, 0)


def _use_extension_pool(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and EXTENSION_ERROR is None


def max_pool3x3(x: torch.Tensor, stride: int = 1, padding: int = 1,
                ceil_mode: bool = False) -> torch.Tensor:
    """``F.max_pool2d(x, 3, stride, padding, ceil_mode=ceil_mode)``: by default the inception
    pool branch's pooling.

    On CPU it runs the extension's kernel (same values, NaN propagates, the input's layout is
    kept; several times faster than ATen's for these shapes); elsewhere, or without the
    extension, it is ``F.max_pool2d``. Gradients flow as through ``F.max_pool2d``, ties
    included; when they are needed, the kernel also keeps each output's tap (one byte) for the
    backward instead of ATen's int64 indices.
    """
    if not _use_extension_pool(x):
        return F.max_pool2d(x, 3, stride, padding, ceil_mode=ceil_mode)
    if torch.is_grad_enabled() and x.requires_grad:
        return max_pool3x3_with_taps(x, stride, padding, ceil_mode)[0]
    return torch.ops.googlenet_fused.max_pool3x3(x, stride, padding, ceil_mode)


def pool_taps_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of :func:`max_pool3x3_with_taps`'s taps for ``x``."""
    return torch.uint8 if _use_extension_pool(x) else torch.int64


def max_pool3x3_with_taps(x: torch.Tensor, stride: int = 1, padding: int = 1,
                          ceil_mode: bool = False):
    """(:func:`max_pool3x3` of ``x``, its taps): what :func:`max_pool3x3_backward` needs.

    On CPU with the extension, the taps are uint8: which of the window's nine positions
    (row-major) each output took, where ATen's max_pool2d takes its index (ties: the first
    maximum; NaN: the last). Elsewhere they are ``F.max_pool2d``'s int64 indices.
    """
    if _use_extension_pool(x):
        return torch.ops.googlenet_fused.max_pool3x3_with_taps(x, stride, padding, ceil_mode)
    return F.max_pool2d(x, 3, stride, padding, ceil_mode=ceil_mode, return_indices=True)


def max_pool3x3_backward(grad: torch.Tensor, x: torch.Tensor, taps: torch.Tensor,
                         stride: int = 1, padding: int = 1, ceil_mode: bool = False, *,
                         accumulate_into: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient of :func:`max_pool3x3_with_taps` w.r.t. ``x`` (used for its shape and
    device), given the output gradient ``grad`` and the forward's ``taps``. With
    ``accumulate_into`` (``x``'s shape) the gradient is added to it in place, in the same pass
    on CPU, and it is returned; otherwise a new tensor in ``x``'s layout."""
    if taps.dtype == torch.uint8:  # the extension's taps
        into = accumulate_into
        if into is None:
            into = torch.empty_like(x, memory_format=_output_layout(x))
        torch.ops.googlenet_fused.max_pool3x3_backward_into(
            into, grad, taps, stride, padding, ceil_mode, accumulate_into is not None)
        return into
    routed = torch.ops.aten.max_pool2d_with_indices_backward(
        grad, x, [3, 3], [stride, stride], [padding, padding], [1, 1], ceil_mode, taps)
    return routed if accumulate_into is None else accumulate_into.add_(routed)


if EXTENSION_ERROR is None:

    @torch.library.register_fake("googlenet_fused::lrn_relu_concat")
    def _lrn_relu_concat_fake(branches, size=LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K,
                              relu=True, bias=None):
        torch._check(len(branches) > 0, lambda: "lrn_relu_concat: expected at least one branch")
        first = branches[0]
        channels = sum(b.shape[1] for b in branches)
        shape = (first.shape[0], channels, first.shape[2], first.shape[3])
        return first.new_empty(shape).contiguous(memory_format=_output_layout(first))

    @torch.library.register_fake("googlenet_fused::lrn_relu_concat_into")
    def _lrn_relu_concat_into_fake(output, branches, size=LRN_SIZE, alpha=LRN_ALPHA,
                                   beta=LRN_BETA, k=LRN_K, relu=True, bias=None):
        return None

    @torch.library.register_fake("googlenet_fused::lrn_relu_concat_backward")
    def _lrn_relu_concat_backward_fake(grad_out, branches, size, alpha, beta, k, relu,
                                       bias=None):
        layout = _output_layout(branches[0])
        return [b.new_empty(b.shape).contiguous(memory_format=layout) for b in branches]

    @torch.library.register_fake("googlenet_fused::lrn_relu_concat_backward_into")
    def _lrn_relu_concat_backward_into_fake(grads, grad_out, branches, size, alpha, beta, k,
                                            relu, bias=None):
        return None

    def _setup_context(ctx, inputs, output):
        # Arguments left at their defaults may be absent from `inputs`. Only the branches (and
        # biases) are saved: the backward op recomputes the window sums and the output's sign.
        branches, *args = inputs
        defaults = (LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, True, None)
        *ctx.lrn, ctx.relu, bias = tuple(args) + defaults[len(args):]
        ctx.n_branches = len(branches)
        ctx.save_for_backward(*branches, *(bias or ()))

    def _backward(ctx, grad_out):
        saved = ctx.saved_tensors
        branches, biases = list(saved[:ctx.n_branches]), list(saved[ctx.n_branches:]) or None
        grads = torch.ops.googlenet_fused.lrn_relu_concat_backward(
            grad_out, branches, *ctx.lrn, ctx.relu, biases)
        # One gradient per argument actually passed: the dispatcher drops trailing arguments
        # equal to their schema defaults, and torch 2.11 refuses any other count.
        extra = [None] * (len(ctx.needs_input_grad) - 1)
        if biases is not None:  # each bias's gradient: its branch's, summed in fp32 at least
            extra[-1] = [g.sum((0, 2, 3), dtype=torch.promote_types(g.dtype, torch.float32))
                         .to(b.dtype) for g, b in zip(grads, biases)]
        return (grads, *extra)

    torch.library.register_autograd("googlenet_fused::lrn_relu_concat", _backward,
                                    setup_context=_setup_context)

    def _pooled_like(x, stride, padding, ceil_mode, dtype=None):
        torch._check(x.dim() == 4, lambda: f"max_pool3x3: expected a 4-D input, got {x.shape}")
        shape = (x.shape[0], x.shape[1], pooled_size(x.shape[2], stride, padding, ceil_mode),
                 pooled_size(x.shape[3], stride, padding, ceil_mode))
        return x.new_empty(shape, dtype=dtype).contiguous(memory_format=_output_layout(x))

    @torch.library.register_fake("googlenet_fused::max_pool3x3")
    def _max_pool3x3_fake(x, stride=1, padding=1, ceil_mode=False):
        return _pooled_like(x, stride, padding, ceil_mode)

    @torch.library.register_fake("googlenet_fused::max_pool3x3_with_taps")
    def _max_pool3x3_with_taps_fake(x, stride=1, padding=1, ceil_mode=False):
        return (_pooled_like(x, stride, padding, ceil_mode),
                _pooled_like(x, stride, padding, ceil_mode, torch.uint8))

    @torch.library.register_fake("googlenet_fused::max_pool3x3_backward_into")
    def _max_pool3x3_backward_into_fake(grad_input, grad_out, taps, stride=1, padding=1,
                                        ceil_mode=False, accumulate=False):
        return None

    def _pool_setup_context(ctx, inputs, output, keeps_taps):
        # Arguments left at their defaults may be absent from `inputs`.
        x, *args = inputs
        ctx.n_args = len(args)
        ctx.pooling = tuple(args) + (1, 1, False)[len(args):]
        if keeps_taps:
            ctx.mark_non_differentiable(output[1])
            ctx.save_for_backward(x, output[1])
        else:  # max_pool3x3 kept no taps: the backward pools again to find them
            ctx.save_for_backward(x, None)

    def _pool_backward(ctx, grad_out, *_):
        x, taps = ctx.saved_tensors
        if taps is None:
            taps = torch.ops.googlenet_fused.max_pool3x3_with_taps(x, *ctx.pooling)[1]
        return (max_pool3x3_backward(grad_out, x, taps, *ctx.pooling),) + (None,) * ctx.n_args

    torch.library.register_autograd(
        "googlenet_fused::max_pool3x3", _pool_backward,
        setup_context=lambda ctx, inputs, output: _pool_setup_context(ctx, inputs, output, False))
    torch.library.register_autograd(
        "googlenet_fused::max_pool3x3_with_taps", _pool_backward,
        setup_context=lambda ctx, inputs, output: _pool_setup_context(ctx, inputs, output, True))
