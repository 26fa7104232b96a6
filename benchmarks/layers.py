"""Where one inference's time goes, layer type by layer type: OpenVINO's per-layer performance
counters (PERF_COUNT) against torch.profiler of the fused network, on the same model (the seed's
GoogLeNet or torchvision's, random weights), input and thread count.

    python benchmarks/layers.py [--network seed|torchvision] [--batch 8] [--dtype fp32|bf16]
                                [--runs 5] [--out FILE.md]

Each side runs ``--runs`` inferences after a warm-up, one after the other (never interleaved);
times are per inference, summed by layer type. OpenVINO reports each executed node's real time
and the primitive it chose (``exec_type``); torch.profiler reports each op's self CPU time on the
calling thread (the OpenMP workers' time shows up in the op that waits for them).
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
import providers  # noqa: E402
from googlenet_fused import GoogLeNet, fuse  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# OpenVINO node types and torch ops -> the layer type they belong to (first match wins).
OPENVINO_TYPES = [("Convolution", "convolutions"), ("LRN", "LRN (+ ReLU)"),
                  ("Pool", "max pools"), ("Concat", "concat"), ("Reorder", "layout conversions"),
                  ("FullyConnected", "head"), ("MatMul", "head"), ("Reduce", "head"),
                  ("Eltwise", "elementwise (ReLU, BatchNorm, transform)"),
                  ("Subgraph", "elementwise (ReLU, BatchNorm, transform)")]
TORCH_OPS = [("convolution", "convolutions"), ("mkldnn", "convolutions"),
             ("lrn_relu_concat", "LRN (+ ReLU)"), ("max_pool", "max pools"),
             ("clamp", "elementwise (ReLU, BatchNorm, transform)"),
             ("relu", "elementwise (ReLU, BatchNorm, transform)"),
             ("add", "elementwise (ReLU, BatchNorm, transform)"),
             ("mul", "elementwise (ReLU, BatchNorm, transform)"),
             ("cat", "concat"), ("copy_", "layout conversions"),
             ("contiguous", "layout conversions"),
             ("addmm", "head"), ("linear", "head"), ("mean", "head"), ("adaptive_avg", "head"),
             ("empty", "allocation")]
ORDER = ["convolutions", "LRN (+ ReLU)", "max pools", "elementwise (ReLU, BatchNorm, transform)",
         "concat", "layout conversions", "allocation", "head", "other"]


def _category(name: str, table) -> str:
    return next((cat for key, cat in table if key.lower() in name.lower()), "other")


def reference_model(network: str) -> torch.nn.Module:
    if network == "torchvision":
        return providers.torchvision_model()
    torch.manual_seed(0)
    return GoogLeNet((3, 224, 224), n_classes=1000).eval()


def openvino_layers(model, x, runs):
    """({layer type: ms per inference}, {primitive: count} of the convolutions, wall ms)."""
    request = peers.openvino_model(model, x, PERF_COUNT="YES").create_infer_request()
    data = x.float().numpy()
    request.infer({0: data})
    totals, kinds, walls = collections.Counter(), collections.Counter(), []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: data})
        walls.append(time.perf_counter() - start)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            totals[_category(info.node_type, OPENVINO_TYPES)] += (
                info.real_time.total_seconds() * 1e3 / runs)
            if "Convolution" in info.node_type:
                kinds[info.exec_type] += 1
    return totals, {k: v // runs for k, v in kinds.items()}, 1e3 * sorted(walls)[runs // 2]


def fused_layers(model, x, runs):
    """({layer type: ms per inference}, wall ms) of the fused network under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    fused = fuse(copy.deepcopy(model).to(x.dtype), "native")
    with torch.no_grad():
        fused(x)
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            fused(x)
            walls.append(time.perf_counter() - start)
        # acc_events: one cycle here; without it torch 2.11 warns when a later call profiles again
        with profile(activities=[ProfilerActivity.CPU], acc_events=True) as prof:
            for _ in range(runs):
                fused(x)
    totals = collections.Counter()
    for event in prof.key_averages():
        totals[_category(event.key, TORCH_OPS)] += event.self_cpu_time_total / 1e3 / runs
    return totals, 1e3 * sorted(walls)[runs // 2]


def report(network="seed", batch=8, dtype="fp32", runs=5) -> str:
    model = reference_model(network)
    x = torch.randn(batch, 3, 224, 224).to(DTYPES[dtype])
    ov_ms, kinds, ov_wall = openvino_layers(model.to(DTYPES[dtype]), x, runs)
    ours, fused_wall = fused_layers(model, x, runs)
    lines = [f"## {network} GoogLeNet, batch {batch}, {dtype}, {torch.get_num_threads()} "
             f"threads: OpenVINO {ov_wall:.1f} ms, fused {fused_wall:.1f} ms per inference", "",
             "| layer type | OpenVINO ms | share | fused ms | share | fused / OpenVINO |",
             "|---|---|---|---|---|---|"]
    ov_total, our_total = sum(ov_ms.values()), sum(ours.values())
    for cat in ORDER:
        a, b = ov_ms.get(cat, 0.0), ours.get(cat, 0.0)
        if a == 0 and b == 0:
            continue
        lines.append(f"| {cat} | {a:.2f} | {100 * a / ov_total:.0f} % | {b:.2f} | "
                     f"{100 * b / our_total:.0f} % | {b / a:.2f} |" if a else
                     f"| {cat} | - | - | {b:.2f} | {100 * b / our_total:.0f} % | - |")
    lines.append(f"| **total (profiled)** | {ov_total:.2f} | | {our_total:.2f} | | "
                 f"{our_total / ov_total:.2f} |")
    lines += ["", "OpenVINO's convolution primitives (per inference): " + ", ".join(
        f"{k} × {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", choices=["seed", "torchvision"], default="seed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", help="append the table to this markdown file")
    args = parser.parse_args(argv)
    text = report(args.network, args.batch, args.dtype, args.runs)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
