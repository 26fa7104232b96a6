"""The one place that decides which implementation runs a fused inception module.

Backends (``backend=`` of FusedInception / FusedGoogLeNet / fuse):
- ``"triton"``: three Triton GEMM launches per module, each with bias + LRN + ReLU in its
  epilogue, stored into the output's channel slices: the merged 1×1 reductions with the pool
  projection (max pool in the operand load), then the 3×3 and the 5×5 as implicit GEMMs.
  CUDA tensors; CPU tensors only under TRITON_INTERPRET=1 (tests).
- ``"native"``: ATen convolutions with the merged 1×1 weights and the extension's fused
  LRN + ReLU + concat. CPU and CUDA; the fast CPU path.
- ``"reference"``: the reference module's own ops.
- ``"auto"``: the first of (triton, native, reference) on CUDA, (native, reference) on CPU that
  supports the input; it never fails where "reference" works.
"""
from __future__ import annotations

import os

import torch

from . import ops

BACKENDS = ("auto", "triton", "native", "reference")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

try:
    from .kernels import conv_lrn_relu  # noqa: F401  (imports triton)

    TRITON_ERROR: str | None = None
except Exception as exc:  # ImportError, or a triton that fails to initialise
    TRITON_ERROR = f"{type(exc).__name__}: {exc}"

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_backend_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def not_supported_reasons(backend: str, x: torch.Tensor) -> list[str]:
    """Why ``backend`` cannot run input ``x``, as readable strings; empty when it can."""
    reasons = []
    if backend in ("triton", "native"):
        if not ops.extension_available():
            reasons.append(f"the C++/CUDA extension is not built ({ops.EXTENSION_ERROR}); "
                           f"{ops.BUILD_HINT}")
        elif x.device.type == "cuda" and not ops.has_cuda_kernels():
            reasons.append("the extension was built without CUDA kernels")
        if x.device.type not in ("cpu", "cuda"):
            reasons.append(f"device {x.device.type} is not supported")
    if backend == "triton":
        if TRITON_ERROR is not None:
            reasons.append(f"Triton is not usable ({TRITON_ERROR})")
        if x.device.type == "cpu" and not _INTERPRET:
            reasons.append("Triton kernels need CUDA tensors (CPU tensors only under "
                           "TRITON_INTERPRET=1)")
        if x.dtype not in TRITON_DTYPES:
            reasons.append(f"dtype {x.dtype} is not supported by the Triton kernels "
                           f"(supported: {', '.join(str(d) for d in TRITON_DTYPES)})")
    return reasons


def fold_bias(x: torch.Tensor) -> bool:
    """Whether a convolution's bias goes into the LRN op after it (``bias=`` of
    ops.lrn_relu_concat) instead of the convolution: on CUDA, where cuDNN adds a bias in a pass
    of its own; not on CPU, where oneDNN adds it inside the convolution for free."""
    return x.device.type == "cuda"


def writes_nchw_output(backend: str, x: torch.Tensor) -> bool:
    """Whether ``backend`` writes an NCHW module output in place from its channels_last
    branches: on CPU the native backend's LRN kernel stores them transposed, which costs nothing
    next to converting a channels_last output afterwards (inception 4a, batch 16: about 1 ms of
    a 36 ms training step). A Triton launch stores pixel rows, so it computes channels_last."""
    return backend == "native" and x.device.type == "cpu"


def select(backend: str, x: torch.Tensor) -> str:
    """The backend that will run ``x``: ``backend`` itself, or the first that fits for "auto"."""
    if backend == "auto":
        candidates = ("triton", "native") if x.device.type == "cuda" else ("native",)
        for candidate in candidates:
            if not not_supported_reasons(candidate, x):
                return candidate
        return "reference"
    reasons = not_supported_reasons(backend, x)
    if reasons:
        raise RuntimeError(f"backend {backend!r} cannot run an input of shape {tuple(x.shape)}, "
                           f"{x.dtype} on {x.device}: " + "; ".join(reasons))
    return backend
