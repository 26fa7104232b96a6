"""Drop-in fused modules: FusedInception, FusedGoogLeNet, FusedLocalResponseNorm and fuse(model).

They subclass the reference modules and keep their submodules, so parameter names, state_dict
keys and constructor signatures are identical; only ``forward`` changes. The backend is chosen
per call by googlenet_fused.backends.

Layout: a fused module returns its output in its input's memory format, as PyTorch's own
modules do. Inside, every backend but "reference" works channels_last on every device (the
Triton GEMMs read each pixel's channels as one contiguous row; oneDNN's and cuDNN's convolutions,
the pool branch and the LRN kernel are fastest there), so a standalone FusedInception fed NCHW
pays a conversion at the entry, and one at the exit except on the native CPU backend (which
writes an NCHW output in place); a GoogLeNet that went through :func:`fuse` (and
FusedGoogLeNet) converts its input once at the entry and stays channels_last between modules.
"""
from __future__ import annotations

import functools
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import backends, ops, prepacked
from .inception_op import DerivedTensors, layout_of, needs_grad, run_fused
from .stem_op import stem_conv_fits, stem_conv_triton
from .reference import GoogLeNet, Inception, check_input

logger = logging.getLogger("googlenet_fused")


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

    The output has the input's memory format (NCHW in, NCHW out). The fused backends compute
    channels_last, so NCHW input costs a conversion at the entry; at the exit the native CPU
    backend writes the NCHW output in place (its LRN kernel stores transposed), the others
    convert. Inception 4a at batch 16, fp32, on the 2-core development CPU takes 11.3 ms from
    NCHW and 10.1 ms from channels_last (measured side by side; 12.5 ms from NCHW with a
    converted output). Feed channels_last input (as a fused GoogLeNet does between its modules)
    to skip the conversions.
    """

    def __init__(self, in_size, _1by1, _3by3red, _3by3, _5by5_red, _5by5, pool_size,
                 backend: str = "auto"):
        super().__init__(in_size, _1by1, _3by3red, _3by3, _5by5_red, _5by5, pool_size)
        self.backend = backends.check_backend_name(backend)
        self._cached = DerivedTensors()  # op_params() for inference
        self._packs = prepacked.ConvPacks()

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
        fused._cached = DerivedTensors()
        fused._packs = prepacked.ConvPacks()
        fused.train(module.training)
        return fused

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    def op_params(self):
        """The eight parameter tensors of the module's op: (w_red, b_red, w3, b3, w5, b5, wp, bp),
        w_red / b_red the three 1×1 convolutions that read the input, stacked.

        Cached for inference, with the 3×3 and 5×5 weights copied channels_last (the layout the
        Triton kernels read, so no launch copies them); rebuilt whenever a weight changes
        (in-place updates bump the tensors' version, ``.to()`` and ``load_state_dict`` too).
        Never cached while autograd or torch.compile needs the stacking in the graph.
        """
        convs = (self.case1[0], self.case2[0], self.case3[0])
        conv3, conv5, proj = self.case2[3], self.case3[3], self.case4[1]
        tensors = [t for conv in (*convs, conv3, conv5, proj) for t in (conv.weight, conv.bias)]

        def params(w3, w5):
            return (torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]),
                    w3, conv3.bias, w5, conv5.bias, proj.weight, proj.bias)

        if torch.compiler.is_compiling() or (torch.is_grad_enabled()
                                             and any(t.requires_grad for t in tensors)):
            return params(conv3.weight, conv5.weight)
        cl = torch.channels_last
        return self._cached.get(tensors, lambda: params(conv3.weight.contiguous(memory_format=cl),
                                                        conv5.weight.contiguous(memory_format=cl)))

    def forward(self, x):
        check_input(x, self.in_size, type(self).__name__)
        _check_device(x, self)
        backend = backends.select(self.backend, x)
        if backend == "reference":
            return super().forward(x).contiguous(memory_format=layout_of(x))
        params = self.op_params()
        # Training returns the pre-activations its backward needs; inference does not.
        return run_fused(backend, x, params, needs_grad(x, params), packs=self._packs)


class FusedLocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` through the extension's one-pass kernel (no ReLU: signed input
    gives exactly ATen's values), same constructor and attributes. Inputs the kernel does not
    take (not 4-D, integer, another device, no extension) run ATen's LocalResponseNorm."""

    @classmethod
    def from_module(cls, module: nn.LocalResponseNorm) -> "FusedLocalResponseNorm":
        fused = cls(module.size, module.alpha, module.beta, module.k)
        fused.train(module.training)
        return fused

    def forward(self, x):
        if (x.dim() == 4 and x.is_floating_point() and ops.extension_available()
                and (x.device.type == "cpu"
                     or (x.device.type == "cuda" and ops.has_cuda_kernels()))):
            return ops.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        return super().forward(x)


class FusedMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with a 3×3 window through the extension's CPU kernel
    (:func:`googlenet_fused.ops.max_pool3x3`: ATen's values, ties and NaN; a backward from one
    byte per output instead of int64 indices, with no zero-filled gradient); same constructor and
    attributes. Other windows, other devices, or a missing extension run ATen's max pooling."""

    @classmethod
    def from_module(cls, module: nn.MaxPool2d) -> "FusedMaxPool2d":
        fused = cls(module.kernel_size, module.stride, module.padding, module.dilation,
                    module.return_indices, module.ceil_mode)
        fused.train(module.training)
        return fused

    def kernel_arguments(self):
        """(stride, padding) for the extension's kernel, or None where it does not apply."""
        def square(value):  # one int when the same along both axes, else None
            pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
            return pair[0] if len(pair) == 2 and pair[0] == pair[1] else None

        stride, padding = square(self.stride), square(self.padding)
        if (square(self.kernel_size) != 3 or square(self.dilation) != 1 or self.return_indices
                or stride is None or padding not in (0, 1)):
            return None
        return stride, padding

    def forward(self, x):
        args = self.kernel_arguments()
        if (args is not None and x.dim() == 4 and x.is_floating_point()
                and x.device.type == "cpu" and ops.extension_available()):
            return ops.max_pool3x3(x, *args, self.ceil_mode)
        return super().forward(x)


class FusedStemConv(nn.Conv2d):
    """A stem convolution of GoogLeNet fused with what follows it: the ReLU (and the LRN), or
    the max pool and then the ReLU.

    On the triton backend, an input that needs no gradient runs conv + bias + ReLU (+ LRN) as
    one Triton launch (stem_op.stem_conv_triton): no bias, ReLU or LRN pass over memory. Any
    other input runs ATen's convolution, the ReLU in place and the LRN module, which autograd
    differentiates. With a pool (the 7×7, stride 2) the bias is added after the pool on CUDA,
    where cuDNN would spend a pass of its own on it at full size: max pooling commutes with
    adding a per-channel constant, so a quarter of the values get it (backends.fold_bias). Same
    parameters (shared) and attributes as the Conv2d it replaces."""

    @classmethod
    def from_module(cls, conv: nn.Conv2d, lrn: nn.Module | None, backend: str,
                    pool: nn.Module | None = None) -> "FusedStemConv":
        fused = cls.__new__(cls)
        for key, value in conv.__dict__.items():  # the same Parameter objects, fresh registries
            fused.__dict__[key] = value.copy() if isinstance(value, dict) else value
        fused.pool, fused.lrn = pool, lrn
        fused.backend = backend
        fused._packs = prepacked.ConvPacks()
        return fused

    def extra_repr(self) -> str:
        return (super().extra_repr() + (", max pool" if self.pool is not None else "") + ", ReLU"
                + (", then LRN" if self.lrn is not None else ""))

    def _one_launch(self, x, grad) -> bool:
        return (self.pool is None and self.bias is not None and stem_conv_fits(self)
                and not grad and backends.select(self.backend, x) == "triton")

    def forward(self, x):
        grad = needs_grad(x, list(self.parameters()))
        if self._one_launch(x, grad):
            lrn = self.lrn
            settings = (lrn.size, lrn.alpha, lrn.beta, lrn.k) if lrn is not None else (0, 0., 0., 0.)
            return stem_conv_triton(x, self.weight, self.bias, *settings)
        # CPU inference: weights prepacked for oneDNN (prepacked.conv_module decides where)
        packs = None if grad or self.backend == "reference" else self._packs
        if self.pool is None:
            y = prepacked.conv_module(packs, self, x, self.weight, self.bias)
        else:
            fold = self.bias is not None and backends.fold_bias(x)
            y = self.pool(prepacked.conv_module(packs, self, x, self.weight,
                                                None if fold else self.bias))
            if fold:
                y = y.add_(self.bias.view(1, -1, 1, 1))
        y = F.relu(y, inplace=True)
        return self.lrn(y) if self.lrn is not None else y


class FusedGoogLeNet(GoogLeNet):
    """The reference :class:`GoogLeNet` with everything :func:`fuse` does to one: the nine
    inception modules fused, the stem's convolutions fused with what follows them
    (FusedStemConv), its other LRN through the extension, and activations channels_last from
    the input on (an NCHW input is converted once).
    state_dict-compatible with GoogLeNet (strict)."""

    def __init__(self, image_shape, n_classes=10, backend: str = "auto"):
        super().__init__(image_shape, n_classes)
        fuse(self, backend)
        self.backend = backend


def _network_entry(backend: str, model: nn.Module, args):
    """Forward pre-hook of a fused GoogLeNet: refuse an input the backend cannot run, naming the
    user's input (not an inner module's), and go channels_last once, for every module after it
    (the network's output is [N, classes]: its layout does not show)."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return None
    backends.select(backend, x)
    return (x.contiguous(memory_format=torch.channels_last), *args[1:])


def _fuse_stem(stem: nn.Sequential, backend: str) -> None:
    """Each stem convolution fused with what follows it as a FusedStemConv: a stride-1
    convolution with its ReLU and the LRN after, if any; a convolution followed by ReLU and max
    pool with both, the ReLU moved after the pool. Max pooling and ReLU commute exactly (both
    monotone; NaN stays NaN; the gradient reaches the same input, or none where the maximum is
    not positive), and after the 3×3 / stride-2 pool the ReLU and its backward touch a quarter
    of the values (at 112×112 for a 224×224 image it was the stem's most expensive
    non-convolution pass in training). The layers taken in become nn.Identity, so the stem
    keeps its indices and state_dict keys; any other ReLU runs in place.
    """
    layers = list(stem)  # (children() would skip a module that sits at two indices)
    for i, conv in enumerate(layers):
        after = layers[i + 1:i + 3]
        if type(conv) is not nn.Conv2d or not after or type(after[0]) is not nn.ReLU:
            continue
        if len(after) == 2 and isinstance(after[1], nn.MaxPool2d):
            layers[i] = FusedStemConv.from_module(conv, None, backend, pool=after[1])
            taken = 2
        elif conv.stride == (1, 1):
            lrn = after[1] if len(after) == 2 and isinstance(after[1], nn.LocalResponseNorm) else None
            layers[i] = FusedStemConv.from_module(conv, lrn, backend)
            taken = 2 if lrn is not None else 1
        else:
            continue
        layers[i + 1:i + 1 + taken] = [nn.Identity() for _ in range(taken)]
    for i, layer in enumerate(layers):
        stem[i] = layer
        if type(layer) is nn.ReLU:
            layer.inplace = True


def fuse(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Fuse ``model`` in place and return it, keeping its outputs, parameters (shared, not
    copied) and state_dict:

    - every reference Inception, at any depth, becomes a FusedInception sharing its parameters;
    - every ``nn.LocalResponseNorm`` becomes a :class:`FusedLocalResponseNorm` (exact on signed
      input, whatever follows it), and every 3×3 ``nn.MaxPool2d`` a :class:`FusedMaxPool2d`,
      unless ``backend == "reference"``;
    - a GoogLeNet also gets FusedGoogLeNet's network-level policy: its stem's convolutions
      fused with the ReLU and the LRN or max pool after them (:class:`FusedStemConv`; the ReLU
      moved after the pool, with which it commutes), an entry hook that checks the backend
      against the input and makes activations channels_last once for the whole network.
      Parameters keep their layout: FSDP2's ``fully_shard`` refuses channels_last ones
      (``model.to(memory_format=torch.channels_last)`` would save a layout copy of each
      weight's gradient per step, ~6 ms of a batch-8 CPU training step);
    - torchvision's GoogLeNet and its blocks (googlenet_fused.torchvision_googlenet, recognized
      by structure): every ``Inception`` block becomes a FusedTorchvisionInception and every
      other ``BasicConv2d`` a FusedBasicConv2d, each folding its BatchNorm for inference (eval
      mode, no autograd) and running torchvision's arithmetic otherwise; the network gets the
      same entry hook, and its first convolution computes channels_last.

    Logs how many modules were swapped. Calling it twice changes nothing more.
    """
    from . import torchvision_googlenet as tv

    backends.check_backend_name(backend)
    if type(model) is Inception or tv.is_inception(model):
        fused = "FusedInception" if type(model) is Inception else "FusedTorchvisionInception"
        raise TypeError(f"fuse: model is itself an inception module; use {fused}.from_module")
    swapped = {}

    def swap(parent, name, fused):
        setattr(parent, name, fused)
        swapped[type(fused).__name__] = swapped.get(type(fused).__name__, 0) + 1

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if type(child) is Inception:
                swap(parent, name, FusedInception.from_module(child, backend))
            elif tv.is_inception(child):  # its branches stay torchvision's, for training
                swap(parent, name, tv.FusedTorchvisionInception.from_module(child, backend))
            elif tv.is_basic_conv(child):
                swap(parent, name, tv.FusedBasicConv2d.from_module(child, backend))
            elif type(child) is nn.LocalResponseNorm and backend != "reference":
                swap(parent, name, FusedLocalResponseNorm.from_module(child))
            elif type(child) is nn.MaxPool2d and backend != "reference":
                fused = FusedMaxPool2d.from_module(child)
                if fused.kernel_arguments() is not None:  # else ATen's pool stays
                    swap(parent, name, fused)
            elif not isinstance(child, (Inception, tv.FusedTorchvisionInception)):
                visit(child)  # a module's branches stay the reference's

    visit(model)
    network = isinstance(model, GoogLeNet) or tv.is_googlenet(model)
    if isinstance(model, GoogLeNet) and backend != "reference":
        _fuse_stem(model.prev, backend)
    if tv.is_googlenet(model) and isinstance(model.conv1, tv.FusedBasicConv2d):
        model.conv1.channels_last = True  # transform_input hands it an NCHW tensor
    if network and backend != "reference" and not getattr(model, "_fused_entry_hook", None):
        model._fused_entry_hook = model.register_forward_pre_hook(
            functools.partial(_network_entry, backend))
    logger.info("fuse: replaced %s (backend=%r)", ", ".join(
        f"{count} module(s) by {name}" for name, count in sorted(swapped.items())) or "nothing",
        backend)
    return model


__all__ = ["FusedInception", "FusedGoogLeNet", "FusedLocalResponseNorm", "FusedMaxPool2d",
           "FusedStemConv", "fuse"]
