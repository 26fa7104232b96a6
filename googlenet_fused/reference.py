"""The seed notebook's GoogLeNet, fixed so it runs, and nothing else changed.

Every fused path in this package is judged against these modules. The fixes are the ones listed
in the seed's NOTES.md (branch names ``case1..case4``, 5×5 padding 2, the paper's stem, the 3b
channel plan, global average pooling, ``n_classes``, ceil-mode stem pools). Kept on purpose: LRN
in every inception branch, in the order Conv → LRN → ReLU.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

# LocalResponseNorm settings of the seed, used by every branch and the stem.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-3, 0.75, 2.0


class InceptionConfig(NamedTuple):
    """The seven constructor numbers of one inception module (Table 1 of the paper)."""

    in_size: int
    n1x1: int
    n3x3red: int
    n3x3: int
    n5x5red: int
    n5x5: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.n1x1 + self.n3x3 + self.n5x5 + self.pool_proj


INCEPTION_CONFIGS: dict[str, InceptionConfig] = {
    "3a": InceptionConfig(192, 64, 96, 128, 16, 32, 32),
    "3b": InceptionConfig(256, 128, 128, 192, 32, 96, 64),
    "4a": InceptionConfig(480, 192, 96, 208, 16, 48, 64),
    "4b": InceptionConfig(512, 160, 112, 224, 24, 64, 64),
    "4c": InceptionConfig(512, 128, 128, 256, 24, 64, 64),
    "4d": InceptionConfig(512, 112, 144, 288, 32, 64, 64),
    "4e": InceptionConfig(528, 256, 160, 320, 32, 128, 128),
    "5a": InceptionConfig(832, 256, 160, 320, 32, 128, 128),
    "5b": InceptionConfig(832, 384, 192, 384, 48, 128, 128),
}
"""Module name ("3a".."5b") → its seven constructor numbers, in network order."""

SPATIAL_AT_224: dict[str, int] = {
    "3a": 28, "3b": 28, "4a": 14, "4b": 14, "4c": 14, "4d": 14, "4e": 14, "5a": 7, "5b": 7,
}
"""Module name → the height (= width) of its input at a 224×224 image."""


def lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(size=LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


def check_channel_counts(**counts: int) -> None:
    """Raise ValueError naming the first argument that is not a positive integer."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"Inception: {name} must be a positive integer, got {value!r}")


def check_input(x: torch.Tensor, channels: int, who: str) -> None:
    """Raise a clear error when ``x`` is not a floating [N, channels, H, W] tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{who}: expected a 4-D input [N, {channels}, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{who}: expected {channels} input channels ([N, {channels}, H, W]), "
            f"got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: expected a floating-point input, got {x.dtype}")


class Inception(nn.Module):
    """Inception module of the seed: four branches, each Conv → LRN → ReLU, concatenated.

    Branches: ``case1`` 1×1; ``case2`` 1×1 reduction → 3×3; ``case3`` 1×1 reduction → 5×5;
    ``case4`` 3×3 max pool → 1×1 pool projection. Output channels:
    ``_1by1 + _3by3 + _5by5 + pool_size``.
    """

    def __init__(self, in_size, _1by1, _3by3red, _3by3, _5by5_red, _5by5, pool_size):
        super().__init__()
        check_channel_counts(in_size=in_size, _1by1=_1by1, _3by3red=_3by3red, _3by3=_3by3,
                             _5by5_red=_5by5_red, _5by5=_5by5, pool_size=pool_size)
        self.in_size = in_size
        self.case1 = nn.Sequential(nn.Conv2d(in_size, _1by1, kernel_size=1), lrn(), nn.ReLU())
        self.case2 = nn.Sequential(
            nn.Conv2d(in_size, _3by3red, kernel_size=1), lrn(), nn.ReLU(),
            nn.Conv2d(_3by3red, _3by3, kernel_size=3, padding=1), lrn(), nn.ReLU())
        self.case3 = nn.Sequential(
            nn.Conv2d(in_size, _5by5_red, kernel_size=1), lrn(), nn.ReLU(),
            nn.Conv2d(_5by5_red, _5by5, kernel_size=5, padding=2), lrn(), nn.ReLU())
        self.case4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(in_size, pool_size, kernel_size=1), lrn(), nn.ReLU())

    @property
    def config(self) -> InceptionConfig:
        """The seven constructor numbers, read back from the layers."""
        return InceptionConfig(self.in_size, self.case1[0].out_channels,
                               self.case2[0].out_channels, self.case2[3].out_channels,
                               self.case3[0].out_channels, self.case3[3].out_channels,
                               self.case4[1].out_channels)

    def forward(self, x):
        check_input(x, self.in_size, type(self).__name__)
        return torch.cat([self.case1(x), self.case2(x), self.case3(x), self.case4(x)], 1)


def _conv_out(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling window along one axis (PyTorch's rule)."""
    span = size + 2 * padding - kernel
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1  # floor division, as PyTorch
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or its left padding
    return max(out, 0)


def stage_sizes(size: int) -> dict[str, int]:
    """Height (or width) of the feature map after each stage, for an input of ``size``."""
    sizes = {"conv7": _conv_out(size, 7, 2, 3)}
    sizes["pool1"] = _conv_out(sizes["conv7"], 3, 2, 0, ceil_mode=True)
    sizes["pool2"] = _conv_out(sizes["pool1"], 3, 2, 0, ceil_mode=True)  # 3×3 conv keeps size
    sizes["pool3"] = _conv_out(sizes["pool2"], 3, 2, 1)
    sizes["pool4"] = _conv_out(sizes["pool3"], 3, 2, 1)
    return sizes


def minimum_image_size() -> int:
    """Smallest height/width for which every layer of GoogLeNet has a non-empty output."""
    size = 1
    while min(stage_sizes(size).values()) < 1:
        size += 1
    return size


class GoogLeNet(nn.Module):
    """GoogLeNet of the seed: a stem, nine inception modules (3a..5b), global average pooling,
    dropout and a linear classifier. ``image_shape`` is (C, H, W); inputs of any size from
    ``minimum_image_size()`` up work (the classifier follows a global average pool).
    """

    def __init__(self, image_shape, n_classes=10):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"GoogLeNet: image_shape must be (C, H, W), got {image_shape!r}")
        check_channel_counts(image_channels=image_shape[0], n_classes=n_classes)
        smallest = minimum_image_size()
        if min(image_shape[1:]) < smallest:
            raise ValueError(f"GoogLeNet: image_shape {tuple(image_shape)} is too small; height "
                             f"and width must be at least {smallest}")
        self.image_shape = tuple(image_shape)
        c = INCEPTION_CONFIGS
        self.prev = nn.Sequential(
            nn.Conv2d(image_shape[0], 64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            lrn(),
            nn.Conv2d(64, 64, kernel_size=1, stride=1),
            nn.ReLU(),
            nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            lrn(),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        )
        self._1st_phase = nn.Sequential(
            Inception(*c["3a"]), Inception(*c["3b"]),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self._2nd_phase = nn.Sequential(
            *(Inception(*c[name]) for name in ("4a", "4b", "4c", "4d", "4e")),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self._3rd_phase = nn.Sequential(
            Inception(*c["5a"]), Inception(*c["5b"]),
            nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Sequential(nn.Dropout(p=0.4), nn.Linear(1024, n_classes))

    def inception_modules(self) -> dict[str, nn.Module]:
        """The nine inception modules by name ("3a".."5b"), in network order."""
        modules = [*self._1st_phase[:2], *self._2nd_phase[:5], *self._3rd_phase[:2]]
        return dict(zip(INCEPTION_CONFIGS, modules))

    def forward(self, x):
        check_input(x, self.image_shape[0], type(self).__name__)
        smallest = minimum_image_size()
        if min(x.shape[2:]) < smallest:
            raise ValueError(f"{type(self).__name__}: input of shape {tuple(x.shape)} is too "
                             f"small; height and width must be at least {smallest}")
        out = self.prev(x)
        out = self._1st_phase(out)
        out = self._2nd_phase(out)
        out = self._3rd_phase(out)
        return self.fc(torch.flatten(out, 1))
