"""torchvision's GoogLeNet through the same kernels, its BatchNorm folded into the convolutions.

torchvision's GoogLeNet (``torchvision.models.googlenet``) is the network most PyTorch users
hold. Every convolution there is a ``BasicConv2d``: Conv2d (no bias) → BatchNorm2d → ReLU, with
no LRN; its "5×5" branch is a 3×3, its max pools round up (ceil_mode), ``transform_input``
rescales the input's channels, and two auxiliary classifiers run in training only.

In eval mode a BatchNorm is a per-channel affine map of its running statistics, so
conv → BN is one convolution (:func:`fold_batchnorm`): weight w·s and bias β + (b − μ)·s, with
s = γ / sqrt(σ² + eps). An inception block is then the seed's fused data flow without the LRN
(``inception_op`` with ``lrn=False``: one GEMM for the three 1×1s that read the input, the max
pool inside the pool projection's GEMM on the triton backend, ReLU in every epilogue, each
branch stored into its slice of the output).

Training stays torchvision's: a BatchNorm on batch statistics cannot be folded, so a module in
training mode, or any call that autograd differentiates, runs torchvision's own arithmetic
(conv, BatchNorm, ReLU, ``torch.cat``) on the same parameters. The fused path is inference:
eval mode under ``torch.no_grad()`` or ``torch.inference_mode()``.

The blocks are recognized by their structure (class names and children, as torchvision builds
them); torchvision itself is never imported here.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import backends, prepacked
from .inception_op import DerivedTensors, needs_grad, run_fused
from .reference import check_input
from .stem_op import stem_conv_fits, stem_conv_triton

_BRANCHES = ("branch1", "branch2", "branch3", "branch4")


# ------------------------------------------------------------------------------- recognition
def _children(module: nn.Module) -> dict:
    return dict(module.named_children())


def is_basic_conv(module: nn.Module) -> bool:
    """A torchvision ``BasicConv2d``: children ``conv`` (Conv2d) and ``bn`` (BatchNorm2d that
    tracks running statistics), relu(bn(conv(x))) in its forward."""
    children = _children(module)
    return (type(module).__name__ == "BasicConv2d" and set(children) == {"conv", "bn"}
            and type(children["conv"]) is nn.Conv2d and type(children["bn"]) is nn.BatchNorm2d
            and children["bn"].track_running_stats
            and children["bn"].num_features == children["conv"].out_channels)


def _is_1x1(block: nn.Module, in_channels: int) -> bool:
    conv = block.conv
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.groups == 1 and conv.in_channels == in_channels)


def _is_pool_3x3_s1(module: nn.Module) -> bool:
    # ceil_mode changes nothing at stride 1 with padding 1: the output keeps the input's size
    return (type(module) is nn.MaxPool2d and module.kernel_size in (3, (3, 3))
            and module.stride in (1, (1, 1)) and module.padding in (1, (1, 1))
            and module.dilation in (1, (1, 1)) and not module.return_indices)


def is_inception(module: nn.Module) -> bool:
    """A torchvision GoogLeNet ``Inception`` block: branch1 a 1×1 BasicConv2d; branch2 and
    branch3 a 1×1 then a "same" KS×KS BasicConv2d; branch4 a 3×3 / stride 1 / pad 1 max pool,
    then a 1×1 BasicConv2d; all 1×1s reading the block's input."""
    children = _children(module)
    if type(module).__name__ != "Inception" or tuple(children) != _BRANCHES:
        return False
    b1, b2, b3, b4 = (children[name] for name in _BRANCHES)
    if not is_basic_conv(b1):
        return False
    cin = b1.conv.in_channels
    pairs_ok = all(
        type(b) is nn.Sequential and len(b) == 2 and all(is_basic_conv(m) for m in b)
        and _is_1x1(b[0], cin) and stem_conv_fits(b[1].conv)
        and b[1].conv.in_channels == b[0].conv.out_channels for b in (b2, b3))
    return (pairs_ok and _is_1x1(b1, cin) and type(b4) is nn.Sequential and len(b4) == 2
            and _is_pool_3x3_s1(b4[0]) and is_basic_conv(b4[1]) and _is_1x1(b4[1], cin))


def is_googlenet(module: nn.Module) -> bool:
    """torchvision's ``GoogLeNet``: its stem, nine inception blocks and head by name."""
    names = set(_children(module))
    wanted = {"conv1", "maxpool1", "conv2", "conv3", "maxpool2", "maxpool3", "maxpool4",
              "avgpool", "fc", *(f"inception{s}" for s in ("3a", "3b", "4a", "4b", "4c", "4d",
                                                           "4e", "5a", "5b"))}
    return (type(module).__name__ == "GoogLeNet" and wanted <= names
            and hasattr(module, "transform_input"))


# ------------------------------------------------------------------------------- folding
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the one convolution that equals ``bn(conv(x))`` with ``bn`` in eval
    mode, computed in fp32 at least and returned in the convolution's dtype (no autograd)."""
    with torch.no_grad():
        dtype = conv.weight.dtype
        compute = torch.promote_types(dtype, torch.float32)
        scale = torch.rsqrt(bn.running_var.to(compute) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.to(compute)
        shift = -bn.running_mean.to(compute)
        if conv.bias is not None:
            shift = shift + conv.bias.to(compute)
        bias = shift * scale
        if bn.bias is not None:
            bias = bias + bn.bias.to(compute)
        weight = conv.weight.to(compute) * scale.view(-1, 1, 1, 1)
        return weight.to(dtype), bias.to(dtype)


def _bn_tensors(block: nn.Module) -> list[torch.Tensor]:
    """Every tensor the folded (weight, bias) of a BasicConv2d is computed from."""
    conv, bn = block.conv, block.bn
    return [t for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                        bn.running_var) if t is not None]


def _folds(blocks) -> bool:
    """Whether every BatchNorm of ``blocks`` runs on its running statistics (eval mode)."""
    return all(not b.bn.training and b.bn.running_mean is not None for b in blocks)


# ------------------------------------------------------------------------------- modules
class FusedBasicConv2d(nn.Module):
    """torchvision's ``BasicConv2d`` (conv → BatchNorm → ReLU) with the BatchNorm folded into
    the convolution for inference: conv + bias + ReLU, one Triton launch on the triton backend
    (for stride-1 "same" convolutions), an ATen convolution and an in-place ReLU otherwise.
    In training, or when autograd needs gradients, torchvision's arithmetic runs. Same children
    (``conv``, ``bn``: shared, not copied), so the same state_dict.

    ``channels_last``: compute channels_last whatever the input's layout (GoogLeNet's first
    convolution: ``transform_input`` hands it an NCHW tensor); otherwise the output has the
    input's layout, as ATen's convolution gives it."""

    @classmethod
    def from_module(cls, module: nn.Module, backend: str = "auto",
                    channels_last: bool = False) -> "FusedBasicConv2d":
        if not is_basic_conv(module):
            raise TypeError(f"FusedBasicConv2d.from_module expects torchvision's BasicConv2d "
                            f"(conv + BatchNorm2d), got {type(module).__name__}")
        fused = cls()
        fused.conv, fused.bn = module.conv, module.bn
        fused.backend = backends.check_backend_name(backend)
        fused.channels_last = channels_last
        fused._folded = DerivedTensors()
        fused._packs = prepacked.ConvPacks()
        fused.train(module.training)
        return fused

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}" + (", channels_last" if self.channels_last else "")

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution's (weight, bias) with the BatchNorm folded in (cached)."""
        return self._folded.get(_bn_tensors(self), lambda: fold_batchnorm(self.conv, self.bn),
                                self.bn.eps)

    def forward(self, x):
        backend = backends.select(self.backend, x) if x.dim() == 4 else "reference"
        if (backend == "reference" or not _folds([self])
                or needs_grad(x, list(self.parameters()))):
            return F.relu(self.bn(self.conv(x)), inplace=True)
        weight, bias = self.folded()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if backend == "triton" and stem_conv_fits(self.conv):
            return stem_conv_triton(x, weight, bias, 0, 0.0, 0.0, 0.0)
        return prepacked.conv_module(self._packs, self.conv, x, weight, bias, relu=True)


class FusedTorchvisionInception(nn.Module):
    """torchvision's GoogLeNet ``Inception`` block, fused for inference: BatchNorm folded into
    each convolution, the three 1×1s that read the input as one GEMM, the pool branch's max pool
    in the pool projection's GEMM (triton), ReLU in every epilogue, each branch written into its
    slice of the output (no ``torch.cat``). Same children (``branch1`` .. ``branch4``: shared),
    so the same state_dict; output in the input's memory format.

    In training mode, or when autograd needs gradients, torchvision's forward runs (the four
    branches, then ``torch.cat``), so ``model.train()`` / ``model.eval()`` switch back and forth
    freely. Use ``torch.no_grad()`` or ``torch.inference_mode()`` for the fused path."""

    @classmethod
    def from_module(cls, module: nn.Module, backend: str = "auto") -> "FusedTorchvisionInception":
        if not is_inception(module):
            raise TypeError(f"FusedTorchvisionInception.from_module expects a torchvision "
                            f"GoogLeNet Inception block, got {type(module).__name__}")
        fused = cls()
        for name in _BRANCHES:
            setattr(fused, name, getattr(module, name))
        fused.backend = backends.check_backend_name(backend)
        fused._folded = DerivedTensors()
        fused._packs = prepacked.ConvPacks()
        fused.train(module.training)
        return fused

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    def _blocks(self):
        """The six BasicConv2d: 1×1, 3×3 reduction, 3×3, "5×5" reduction, "5×5", pool proj."""
        return (self.branch1, self.branch2[0], self.branch2[1], self.branch3[0], self.branch3[1],
                self.branch4[1])

    def op_params(self):
        """(w_red, b_red, w3, b3, w5, b5, wp, bp) for the inception op, BatchNorm folded; the
        three 1×1s that read the input stacked, the KS×KS weights channels_last (as the Triton
        kernels read them). Cached, recomputed whenever a weight, BatchNorm tensor or eps
        changes (in place, ``.to()``, ``load_state_dict``)."""
        def make():
            b1, r3, c3, r5, c5, proj = (fold_batchnorm(b.conv, b.bn) for b in self._blocks())
            cl = torch.channels_last
            return (torch.cat([b1[0], r3[0], r5[0]]), torch.cat([b1[1], r3[1], r5[1]]),
                    c3[0].contiguous(memory_format=cl), c3[1],
                    c5[0].contiguous(memory_format=cl), c5[1], *proj)

        blocks = self._blocks()
        return self._folded.get([t for b in blocks for t in _bn_tensors(b)], make,
                                tuple(b.bn.eps for b in blocks))

    def forward(self, x):
        check_input(x, self.branch1.conv.in_channels, type(self).__name__)
        blocks = self._blocks()
        backend = backends.select(self.backend, x)
        if (backend == "reference" or not _folds(blocks)
                or needs_grad(x, [p for b in blocks for p in b.parameters()])):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                              self.branch4(x)], 1)
        return run_fused(backend, x, self.op_params(), training=False, lrn=False,
                         packs=self._packs)


__all__ = ["FusedBasicConv2d", "FusedTorchvisionInception", "fold_batchnorm", "is_basic_conv",
           "is_inception", "is_googlenet"]
