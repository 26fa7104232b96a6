"""Drop-in fused modules: FusedInception, FusedGoogLeNet and fuse(model).

They subclass the reference modules and keep their submodules, so parameter names, state_dict
keys and constructor signatures are identical; only ``forward`` changes. The backend is chosen
per call by googlenet_fused.backends.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import backends, ops
from .inception_op import inception_triton
from .reference import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, GoogLeNet, Inception, check_input

logger = logging.getLogger("googlenet_fused")
LRN = (LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)


def _check_device(x: torch.Tensor, module: nn.Module) -> None:
    param = next(module.parameters())
    if x.device != param.device:
        raise ValueError(f"{type(module).__name__}: input is on {x.device} but the module's "
                         f"parameters are on {param.device}")
    if x.dtype != param.dtype:
        raise TypeError(f"{type(module).__name__}: input is {x.dtype} but the module's "
                        f"parameters are {param.dtype}")


class FusedInception(Inception):
    """The reference :class:`Inception` with a fused forward.

    Same constructor (plus ``backend``), same parameter names: ``load_state_dict`` of a
    reference module's state works with ``strict=True``. See googlenet_fused.backends for the
    backends; "auto" picks the fastest that supports the input.

    On CPU the native backend works channels_last (oneDNN's convolutions and the pool branch
    are fastest there), so its output is channels_last whatever the input's layout: the values
    are the reference's; call ``.contiguous()`` where NCHW strides are needed (e.g. ``.view``).
    Feeding channels_last input skips the one conversion at the module's entry.
    """

    def __init__(self, in_size, _1by1, _3by3red, _3by3, _5by5_red, _5by5, pool_size,
                 backend: str = "auto"):
        super().__init__(in_size, _1by1, _3by3red, _3by3, _5by5_red, _5by5, pool_size)
        self.backend = backends.check_backend_name(backend)
        self._stacked = None  # (key, weight, bias) of the merged 1×1 reductions

    @classmethod
    def from_module(cls, module: Inception, backend: str = "auto") -> "FusedInception":
        """A FusedInception that shares ``module``'s submodules (and so its parameters)."""
        if not isinstance(module, Inception):
            raise TypeError(f"from_module expects an Inception, got {type(module).__name__}")
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.in_size = module.in_size
        for name in ("case1", "case2", "case3", "case4"):
            setattr(fused, name, getattr(module, name))
        fused.backend = backends.check_backend_name(backend)
        fused._stacked = None
        fused.train(module.training)
        return fused

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    def reduction_weights(self):
        """The three 1×1 convolutions that read the input, stacked: (weight [C, Cin, 1, 1], bias).

        Cached for inference; rebuilt whenever a weight changes (in-place updates bump the
        tensors' version, ``.to()`` and ``load_state_dict`` too), and never cached while
        autograd or torch.compile needs the stacking in the graph.
        """
        convs = (self.case1[0], self.case2[0], self.case3[0])
        tensors = [t for conv in convs for t in (conv.weight, conv.bias)]
        if torch.compiler.is_compiling() or (torch.is_grad_enabled()
                                             and any(t.requires_grad for t in tensors)):
            return (torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]))
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        if self._stacked is None or self._stacked[0] != key:
            with torch.no_grad():
                self._stacked = (key, torch.cat([c.weight for c in convs]),
                                 torch.cat([c.bias for c in convs]))
        return self._stacked[1], self._stacked[2]

    def forward(self, x):
        check_input(x, self.in_size, type(self).__name__)
        _check_device(x, self)
        backend = backends.select(self.backend, x)
        if backend == "reference":
            return super().forward(x)
        w_red, b_red = self.reduction_weights()
        conv3, conv5, proj = self.case2[3], self.case3[3], self.case4[1]
        if backend == "triton":
            return inception_triton(x, w_red, b_red, conv3.weight, conv3.bias, conv5.weight,
                                    conv5.bias, proj.weight, proj.bias)
        return self._native(x, w_red, b_red, conv3, conv5, proj)

    def _native(self, x, w_red, b_red, conv3, conv5, proj):
        if x.device.type == "cpu":
            # oneDNN's convolutions (and the extension's pooling and LRN) are fastest here.
            x = x.contiguous(memory_format=torch.channels_last)
        c1, c3r = self.case1[0].out_channels, self.case2[0].out_channels
        z = F.conv2d(x, w_red, b_red)
        red3 = ops.lrn_relu(z.narrow(1, c1, c3r), *LRN)
        red5 = ops.lrn_relu(z.narrow(1, c1 + c3r, z.shape[1] - c1 - c3r), *LRN)
        y3 = F.conv2d(red3, conv3.weight, conv3.bias, padding=1)
        y5 = F.conv2d(red5, conv5.weight, conv5.bias, padding=2)
        yp = F.conv2d(ops.max_pool3x3(x), proj.weight, proj.bias)
        # The concat is free: the op writes each branch into its slice of one new tensor.
        return ops.lrn_relu_concat([z.narrow(1, 0, c1), y3, y5, yp], *LRN)


class _StemLRN(nn.LocalResponseNorm):
    """The stem's LRN through the extension. Its input follows a ReLU (non-negative), where
    LRN keeps signs, so lrn(x) == relu(lrn(x)): the fused LRN + ReLU op computes it exactly."""

    def forward(self, x):
        if ops.extension_available() and x.device.type in ("cpu", "cuda") and (
                x.device.type == "cpu" or ops.has_cuda_kernels()):
            return ops.lrn_relu(x, self.size, self.alpha, self.beta, self.k)
        return super().forward(x)


def _fuse_stem(stem: nn.Sequential) -> None:
    """The stem's LRNs through the extension, and its ReLUs in place: each follows a
    convolution, whose backward does not need its output, and in place they skip allocating
    (and page-faulting) a new activation the size of the conv's output."""
    for name, layer in stem.named_children():
        if type(layer) is nn.LocalResponseNorm:
            setattr(stem, name, _StemLRN(layer.size, layer.alpha, layer.beta, layer.k))
        elif type(layer) is nn.ReLU:
            layer.inplace = True


class FusedGoogLeNet(GoogLeNet):
    """The reference :class:`GoogLeNet` with its nine inception modules fused and the stem's
    LRN through the extension (its ReLUs in place). state_dict-compatible with GoogLeNet
    (strict). On CPU the activations stay channels_last from the input on."""

    def __init__(self, image_shape, n_classes=10, backend: str = "auto"):
        super().__init__(image_shape, n_classes)
        fuse(self, backend)
        if backend != "reference":
            _fuse_stem(self.prev)
        self.backend = backend

    def forward(self, x):
        if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # see FusedInception._native
        return super().forward(x)


def fuse(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace every reference Inception inside ``model`` (at any depth) by a FusedInception
    that shares its parameters, in place; returns ``model``. Logs how many were swapped."""
    backends.check_backend_name(backend)
    count = 0
    if type(model) is Inception:
        raise TypeError("fuse: model is itself an Inception; use FusedInception.from_module")
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is Inception:
                setattr(parent, name, FusedInception.from_module(child, backend))
                count += 1
    logger.info("fuse: replaced %d Inception module(s) by FusedInception (backend=%r)",
                count, backend)
    return model


__all__ = ["FusedInception", "FusedGoogLeNet", "fuse"]
