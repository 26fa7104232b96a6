"""Convolution weights prepacked once for oneDNN, for CPU inference in eager mode.

ATen's ``conv2d`` on CPU reorders the weight into oneDNN's blocked layout on every call, and at
batch 1 it sends small 3×3 convolutions (a 7×7 or 14×14 map) to its slow im2col path. A weight
reordered once for the input's shape (``torch.ops.mkldnn._reorder_convolution_weight``, what
inductor's freezing does) and run by ``torch.ops.mkldnn._convolution_pointwise`` (bias in the
primitive) takes the same arithmetic without either cost: the convolutions of one
inception module at batch 1 ran 1.35-4.5× faster on the 2-core development CPU (at batch 8,
where the reorder is a small share, 1.0-1.06×).

Only where nothing needs a graph or a gradient: CPU, fp32 or bf16 (where oneDNN supports it on
this CPU), mkldnn enabled, no autograd, not under torch.compile (which does its own freezing).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Entries kept per ConvPacks before it starts over: a module's convolutions at a few input
# shapes.
_MAX_ENTRIES = 64


def applies(x: torch.Tensor) -> bool:
    """Whether a convolution on ``x`` may run prepacked (see the module docstring); the caller
    has made sure that nothing needs a gradient."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if x.dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return x.dtype == torch.float32


class ConvPacks:
    """One module's prepacked convolution weights, by weight and input shape.

    An entry is keyed by the weight's storage and version (an in-place update, ``.to()`` or
    ``load_state_dict`` changes one of them) and keeps the weight alive, so its storage cannot
    be reused by another tensor while the entry exists: a changed weight is repacked, never
    run stale."""

    def __init__(self):
        self._entries = {}

    def __getstate__(self):  # copies and pickles of a module start empty (oneDNN tensors
        return {}            # have no storage to copy)

    def __setstate__(self, state):
        self._entries = {}

    def conv(self, x, weight, bias, padding=0, stride=1):
        """``conv2d(x, weight, bias, stride, padding)``, the weight reordered for x's shape on
        first use. The caller checks :func:`applies`; x is channels_last (so is the output)."""
        key = (weight.data_ptr(), weight._version, weight.dtype, tuple(x.shape), padding, stride)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not weight:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight, [padding] * 2, [stride] * 2, [1, 1], 1, list(x.shape))
            entry = self._entries[key] = (weight, packed)
        return torch.ops.mkldnn._convolution_pointwise(
            x, entry[1], bias, [padding] * 2, [stride] * 2, [1, 1], 1, "none", [], "")


def conv_module(packs: ConvPacks | None, module: nn.Conv2d, x, weight, bias, relu=False):
    """``module``'s convolution of ``x`` with (``weight``, ``bias``) (+ ReLU), through ``packs``
    where it applies: square padding and stride, no dilation or groups, a channels_last ``x``
    (the primitive's output is channels_last; other layouts keep ATen's, whose output has the
    input's). The ReLU is ATen's, after the primitive: oneDNN's ReLU post-op turns NaN into 0.
    ``packs`` None: ATen's convolution (the caller's way of saying a gradient is needed)."""
    padding, stride = module.padding, module.stride
    if (packs is not None and isinstance(padding, tuple) and padding[0] == padding[1]
            and stride[0] == stride[1] and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros"
            and x.is_contiguous(memory_format=torch.channels_last) and applies(x)):
        y = packs.conv(x, weight, bias, padding[0], stride[0])
    else:
        y = module._conv_forward(x, weight, bias)
    return F.relu(y, inplace=True) if relu else y
