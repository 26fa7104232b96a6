"""The extension's ops (``torch.ops.googlenet_fused.lrn_relu_concat[_into]`` and the CPU
``max_pool3x3``): fake kernels for torch.compile / export, autograd, and Python wrappers that say
clearly when the extension is missing. Importing this module never fails because the extension
is missing.
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


def max_pool3x3(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 3, stride=1, padding=1)``, the inception pool branch's pooling.

    On CPU it runs the extension's kernel (same values, NaN propagates, the input's layout is
    kept; several times faster than ATen's for these shapes); elsewhere, or without the
    extension, it is ``F.max_pool2d``. Gradients flow as through ``F.max_pool2d``.
    """
    if x.device.type == "cpu" and EXTENSION_ERROR is None:
        return torch.ops.googlenet_fused.max_pool3x3(x)
    return F.max_pool2d(x, 3, 1, 1)


def max_pool3x3_backward(grad: torch.Tensor, x: torch.Tensor, pooled: torch.Tensor):
    """The gradient of :func:`max_pool3x3` w.r.t. ``x``, given its output ``pooled``: each
    output's gradient goes where ``F.max_pool2d`` sends it (ties: the first maximum). On CPU the
    extension routes it from ``pooled`` in one pass; elsewhere ATen recomputes the indices."""
    if x.device.type == "cpu" and EXTENSION_ERROR is None:
        return torch.ops.googlenet_fused.max_pool3x3_backward(grad, x, pooled)
    _, indices = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [3, 3], [1, 1], [1, 1],
                                                           [1, 1], False, indices)


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

    @torch.library.register_fake("googlenet_fused::max_pool3x3")
    def _max_pool3x3_fake(x):
        torch._check(x.dim() == 4, lambda: f"max_pool3x3: expected a 4-D input, got {x.shape}")
        return torch.empty_like(x, memory_format=_output_layout(x))

    @torch.library.register_fake("googlenet_fused::max_pool3x3_backward")
    def _max_pool3x3_backward_fake(grad_out, x, output):
        return torch.empty_like(x, memory_format=_output_layout(x))

    def _max_pool3x3_setup_context(ctx, inputs, output):
        # The output is the pool projection's input, saved by its convolution anyway.
        ctx.save_for_backward(inputs[0], output)

    def _max_pool3x3_backward(ctx, grad_out):
        # Ties go where F.max_pool2d sends them (see csrc/max_pool3x3.cpp).
        x, output = ctx.saved_tensors
        return torch.ops.googlenet_fused.max_pool3x3_backward(grad_out, x, output)

    torch.library.register_autograd("googlenet_fused::max_pool3x3", _max_pool3x3_backward,
                                    setup_context=_max_pool3x3_setup_context)
