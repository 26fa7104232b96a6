"""One small forward + backward through every fused path, for `compute-sanitizer --tool memcheck`.

    python benchmarks/fused_paths.py [--device cuda|cpu]

Runs, on small shapes with odd channel counts: each extension op (lrn_relu_concat with its
backward, lrn_relu_concat_into on a channel slice, max_pool3x3 where the device has it), each
Triton kernel through the triton backend, and FusedInception (triton and native backends; their
backward writes lrn_relu_concat_backward_into's gradients into channel slices) and
FusedGoogLeNet forward + backward, in fp32, fp16 and bf16, NCHW and channels_last. It checks
the values against the reference loosely (memcheck's subject is memory, the tests' is numerics)
and exits non-zero on any failure, so a sanitizer run reports both.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

from googlenet_fused import FusedGoogLeNet, FusedInception, backends, ops
from googlenet_fused.reference import GoogLeNet, Inception

LRN = (5, 1e-3, 0.75, 2.0)
ODD = (3, 5, 4, 7, 2, 3, 5)  # an inception config with odd branch widths


def _close(got, expected, what):
    err = (got.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item() + 1e-6
    if not err <= 0.05 * scale:  # catches garbage and NaN; numerics are the tests' job
        raise AssertionError(f"{what}: max error {err:.3e} against a scale of {scale:.3e}")


def extension_ops(device, dtype, fmt):
    branches = [torch.randn(2, c, 5, 3, device=device, dtype=dtype)
                .contiguous(memory_format=fmt).requires_grad_() for c in (3, 6, 1)]
    out = ops.lrn_relu_concat(branches, *LRN)
    ref = torch.cat([F.relu(F.local_response_norm(b.float(), *LRN)) for b in branches], 1)
    _close(out, ref, f"lrn_relu_concat {dtype}")
    out.float().square().sum().backward()
    big = torch.zeros(2, 14, 5, 3, device=device, dtype=dtype).contiguous(memory_format=fmt)
    ops.lrn_relu_concat([b.detach() for b in branches], *LRN, out=big.narrow(1, 2, 10))
    _close(big.narrow(1, 2, 10), ref, f"lrn_relu_concat_into {dtype}")
    if device == "cpu":  # max_pool3x3 is a CPU kernel; CUDA runs F.max_pool2d
        x = branches[1].detach()
        _close(ops.max_pool3x3(x), F.max_pool2d(x, 3, 1, 1), f"max_pool3x3 {dtype}")


def inception(device, dtype, fmt, backend):
    fused = FusedInception(*ODD, backend=backend).to(device, dtype)
    ref = Inception(*ODD).to(device)  # fp32: ATen's CPU LRN has no fp16 kernel
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(3, ODD[0], 6, 5, device=device, dtype=dtype).contiguous(memory_format=fmt)
    out = fused(x.requires_grad_())
    _close(out, ref(x.detach().float()), f"FusedInception {backend} {dtype}")
    out.float().square().sum().backward()


def network(device, dtype, backend):
    net = FusedGoogLeNet((3, 64, 64), n_classes=10, backend=backend).to(device, dtype).eval()
    ref = GoogLeNet((3, 64, 64), n_classes=10).to(device).eval()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 64, 64, device=device, dtype=dtype)
    with torch.no_grad():
        _close(net(x), ref(x.float()), f"FusedGoogLeNet {backend} {dtype}")
    net.train()
    net(x).float().square().sum().backward()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = args.device
    ops.require_extension("googlenet_fused::lrn_relu_concat")
    dtypes = [torch.float32, torch.float16, torch.bfloat16]
    layouts = [torch.contiguous_format, torch.channels_last]
    fused_backends = [b for b in ("triton", "native")
                      if not backends.not_supported_reasons(b, torch.empty(1, device=device))]
    if device == "cuda" and fused_backends != ["triton", "native"]:
        sys.exit(f"fused_paths: on CUDA both backends must run; only {fused_backends} can")
    runs = 0
    for dtype in dtypes:
        for fmt in layouts:
            extension_ops(device, dtype, fmt)
            runs += 1
            for backend in fused_backends:
                if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
                    continue  # Triton's interpreter has no bf16 (PLATFORM.md)
                inception(device, dtype, fmt, backend)
                runs += 1
        for backend in fused_backends:
            if backend == "triton" and device == "cpu":
                continue  # a network in the interpreter takes minutes; the modules cover it
            network(device, dtype, backend)
            runs += 1
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"fused_paths: {runs} forward + backward runs on {device} "
          f"({', '.join(fused_backends)} backends, extension ops), all close to the reference")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
