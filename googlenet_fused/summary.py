"""Parameters and multiply-accumulates per stage, counted from a real model's layers.

The column "MACs w/o 1×1 reduction" prices the seed's central claim: what each inception module
would cost if its 3×3 and 5×5 convolutions read the module input directly (no 1×1 reductions).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .reference import GoogLeNet, Inception


def _conv_macs(conv: nn.Conv2d, out_shape) -> int:
    kh, kw = conv.kernel_size
    return out_shape[1] * out_shape[2] * out_shape[3] * (conv.in_channels // conv.groups) * kh * kw


def count_macs(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, int]:
    """Multiply-accumulates per image of every Conv2d / Linear, keyed by layer."""
    macs: dict[nn.Module, int] = {}

    def hook(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            macs[layer] = _conv_macs(layer, output.shape)
        else:
            macs[layer] = layer.in_features * layer.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return macs


def _without_reductions(module: Inception, in_shape) -> int:
    """MACs if the 3×3 and 5×5 convolutions read the module input instead of a reduction."""
    _, cin, h, w = in_shape
    c3, c5 = module.case2[3], module.case3[3]
    direct = sum(cin * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * h * w
                 for conv in (c3, c5))
    one_by_one = (module.case1[0].out_channels + module.case4[1].out_channels) * cin * h * w
    return direct + one_by_one


def summary_rows(image_size: int = 224, n_classes: int = 1000):
    """One row per stage (stem, 3a..5b, head): shapes, parameters, MACs, MACs w/o reductions."""
    model = GoogLeNet((3, image_size, image_size), n_classes)
    x = torch.zeros(1, 3, image_size, image_size)
    macs = count_macs(model, x)
    shapes = {}

    def record(name):
        def hook(layer, inputs, output):
            shapes[name] = (tuple(inputs[0].shape), tuple(output.shape))
        return hook

    stages = {"stem": model.prev, **model.inception_modules(), "head": model.fc}
    handles = [m.register_forward_hook(record(n)) for n, m in stages.items()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    rows = []
    for name, module in stages.items():
        layer_macs = sum(macs.get(layer, 0) for layer in module.modules())
        params = sum(p.numel() for p in module.parameters())
        no_red = (_without_reductions(module, shapes[name][0]) if isinstance(module, Inception)
                  else layer_macs)
        rows.append(dict(stage=name, input=shapes[name][0][1:], output=shapes[name][1][1:],
                         params=params, macs=layer_macs, macs_without_reduction=no_red))
    return model, rows


def format_summary(image_size: int = 224, n_classes: int = 1000) -> str:
    model, rows = summary_rows(image_size, n_classes)
    header = (f"{'stage':<6} {'input (C, H, W)':<18} {'output':<18} {'params':>11} "
              f"{'MACs':>15} {'MACs w/o 1x1 red.':>18} {'ratio':>6}")
    lines = [f"GoogLeNet (seed variant, LRN in every branch) at {image_size}x{image_size}, "
             f"{n_classes} classes, per image", header, "-" * len(header)]
    for r in rows:
        ratio = r["macs_without_reduction"] / r["macs"] if r["macs"] else 1.0
        lines.append(f"{r['stage']:<6} {str(r['input']):<18} {str(r['output']):<18} "
                     f"{r['params']:>11,} {r['macs']:>15,} {r['macs_without_reduction']:>18,} "
                     f"{ratio:>5.2f}x")
    total_params = sum(r["params"] for r in rows)
    total_macs = sum(r["macs"] for r in rows)
    total_no_red = sum(r["macs_without_reduction"] for r in rows)
    assert total_params == sum(p.numel() for p in model.parameters())
    lines.append("-" * len(header))
    lines.append(f"{'total':<6} {'':<18} {'':<18} {total_params:>11,} {total_macs:>15,} "
                 f"{total_no_red:>18,} {total_no_red / total_macs:>5.2f}x")
    return "\n".join(lines)
