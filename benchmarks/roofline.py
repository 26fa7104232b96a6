"""Roofline model of GoogLeNet's inception modules on the H200: FLOPs and HBM bytes of every
kernel each implementation launches, turned into time estimates before anything is measured.

    python benchmarks/roofline.py [--batches 32,256] [--dtype bf16] [--out DIR]

Three implementations per module:
- ``eager``: the reference in PyTorch eager: six cuDNN convolutions each followed by its own bias
  pass, F.local_response_norm as seven elementwise / pooling passes, ReLU, the pool branch's max
  pool, and torch.cat.
- ``fused``: this project's triton backend as the code stands (kernels/conv_lrn_relu.py): three
  Triton GEMM launches per module, each with bias + LRN + ReLU in its epilogue and stored into
  its slice of the output: the merged 1×1 reductions with the pool projection (its max pool in
  the operand load; x read once), and the 3×3 / 5×5 branches as implicit GEMMs over (tap,
  channel). Their real waste is counted: rows (the batch's pixels) padded to one BLOCK_M,
  columns from kernels/tiling.py's branch-following chains (an LRN halo only at a chain's
  ends), the bf16 window product and the small products that hand a chain's edge columns on,
  and the longer last wave of long chains; x is read once per launch (grouped raster: a row
  block's chains run while it is in L2). Each GEMM takes the best of the configs its autotuner
  keeps.
- ``ideal``: one kernel per module that reads x and the weights once, writes the output once,
  keeps every intermediate on chip and does exactly the convolutions' FLOPs.

A kernel's time is max(FLOPs / peak, HBM bytes / bandwidth, L2 operand bytes / L2 bandwidth)
plus a fixed launch cost and, for the fused GEMMs, half their longest program (the last wave's
expected idle time; a chain's tiles run one after another on one SM); kernels of one module run
one after another. The L2 term is the fused GEMMs' operand tiles moved from L2 into shared
memory (every tile loads its BLOCK_M rows and BLOCK_N weight columns at each K step), and each
GEMM's config is chosen under all three ceilings; cuDNN's kernels (eager) and the ideal kernel
are taken as compute- or HBM-bound. Ceilings: 790 TFLOP/s dense bf16/fp16 (half for fp32 as
TF32), 4.3 TB/s HBM (both measured on this project's H200), 7 TB/s L2 to shared memory
(assumed, see L2_BYTES_PER_S), 60 MB of L2, 132 SMs. The last line reads "nine modules, batch
256, bf16: fused/ideal = X.XX", L2 included.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from googlenet_fused.kernels import tiling  # noqa: E402
from googlenet_fused.reference import INCEPTION_CONFIGS, SPATIAL_AT_224  # noqa: E402

PEAK_FLOPS = {"bf16": 790e12, "fp16": 790e12, "fp32": 395e12}
HBM_BYTES_PER_S = 4.3e12
L2_BYTES = 60e6
# L2 -> shared memory bandwidth: NOT measured on this project's H200 (public microbenchmarks of
# the H100, the same die, range from ~5.5 to ~12 TB/s): an assumption from the lower half until
# benchmarks/gpu_check.sh measures it (environment.txt) and the measured figure replaces it.
L2_BYTES_PER_S = 7e12
L2_SENSITIVITY = (None, 12e12, 10e12, 7e12, 5.5e12)  # the report's table; None: not counted
LAUNCH_S = 2e-6  # launch + pipeline drain of one kernel in a stream of kernels (an estimate)
SMS = 132        # the H200's streaming multiprocessors
ITEM = {"bf16": 2, "fp16": 2, "fp32": 4}
LRN_SIZE = 5
# bf16 terms of u² in the window product, kernels/conv_lrn_relu.py (fp32: TF32 default)
WINDOW_TERMS = {"bf16": 1, "fp16": 2, "fp32": 2}
# Passes of F.local_response_norm + ReLU over a tensor T: mul, pad, avg_pool3d, mul, add, pow
# (one read and one write each), div (two reads, one write), relu (one read, one write).
LRN_RELU_EAGER_READS, LRN_RELU_EAGER_WRITES, LRN_RELU_EAGER_LAUNCHES = 9, 8, 8


@dataclass
class Kernel:
    name: str
    flops: float
    bytes: float
    launches: int = 1
    bf16_flops: float = 0.0  # FLOPs on bf16 operands whatever the dtype (the window product)
    l2_bytes: float = 0.0    # operand tiles moved from L2 into shared memory (GEMMs)
    tail_s: float = 0.0      # the last wave's expected idle time
    config: str = ""         # the GEMM's tile shape and chains, as chosen

    def _terms(self, dtype, l2_bytes_per_s):
        compute = self.flops / PEAK_FLOPS[dtype] + self.bf16_flops / PEAK_FLOPS["bf16"]
        l2 = self.l2_bytes / l2_bytes_per_s if l2_bytes_per_s else 0.0
        return {"compute": compute, "HBM": self.bytes / HBM_BYTES_PER_S, "L2": l2}

    def seconds(self, dtype: str, l2_bytes_per_s: float | None = L2_BYTES_PER_S) -> float:
        """The estimate; the L2 operand traffic is a ceiling at ``l2_bytes_per_s`` (None: not
        counted)."""
        return (max(self._terms(dtype, l2_bytes_per_s).values()) + self.launches * LAUNCH_S
                + self.tail_s)

    def bound(self, dtype: str, l2_bytes_per_s: float | None = L2_BYTES_PER_S) -> str:
        """Which ceiling sets the estimate: "compute", "HBM" or "L2"."""
        terms = self._terms(dtype, l2_bytes_per_s)
        return max(terms, key=terms.get)

    def flop_per_l2_byte(self) -> float | None:
        return (self.flops + self.bf16_flops) / self.l2_bytes if self.l2_bytes else None


def _conv_flops(pixels, cin, cout, k):
    return 2.0 * pixels * cin * cout * k * k


def triton_gemm(name, n, s, ks, cin, groups, item, dtype, lrn=True,
                l2_bytes_per_s=L2_BYTES_PER_S, pool=False):
    """One Triton GEMM + LRN + ReLU (a KS×KS convolution over ``cin`` channels, or the 1×1
    launch) with its real tiling, at the best config its autotuner keeps (tiling.prune):
    ``groups`` are the branches it stacks, in chains as the launcher plans them for the H200
    (tiling.chain_pieces, chain_plan); the taps' channels, flattened, are padded to the launch's
    K step (tiling.k_step). ``lrn`` False: the epilogue is bias + ReLU only (no halo columns, no
    window product), as the launcher plans it (window 1). The config is chosen with the L2
    operand traffic at ``l2_bytes_per_s`` as a ceiling too (None: without it). ``pool``: the
    launch has pool tiles
    (the configs it may run differ)."""
    rows, cout = n * s * s, sum(sum(g) for g in groups)
    size = LRN_SIZE if lrn else 1
    step = tiling.k_step(ks * ks * cin)
    k_total = math.ceil(ks * ks * cin / step) * step
    shapes = {cfg[:2] for cfg in tiling.CONFIGS}
    chains = {(bm, bn): tiling.launch_chains(groups, size, bm, bn, rows, k_total, SMS, pool=pool)
              for bm, bn in shapes}
    # Where some shape's plan chains (kernel's CHAINED), the configs that run chains hand edges
    # on in every tile, their single-tile plans too
    chained = any(n > 1 for plan in chains.values() for *_, n in plan)
    configs = tiling.prune(tiling.CONFIGS, groups, size, rows, ITEM[dtype], step, pool=pool)
    terms = WINDOW_TERMS[dtype] if lrn else 0
    best = None
    for bm, bn, *_ in configs:
        plan = chains[bm, bn]
        tiles_per_row_block = sum(n for *_, n in plan)
        columns = tiles_per_row_block * bn
        padded_rows = math.ceil(rows / bm) * bm
        # Per tile and row: the window product, 2 · BN · BN; with chains also the edge's, two
        # [16] @ [16, 16] (the windows of the 16 channels around the tile's first boundary).
        carry = chained and (bm, bn) in tiling.CHAIN_SHAPES
        per_tile = 2.0 * bn * bn + (2.0 * 2 * tiling.EDGE * tiling.EDGE if carry else 0.0)
        window = terms * padded_rows * per_tile * tiles_per_row_block
        # Every tile loads its BLOCK_M rows and BLOCK_N weight columns at each K step (a pool
        # tile's nine shifted row loads are counted once: neighbouring pixels share them in L1).
        tiles = padded_rows // bm * tiles_per_row_block
        longest = max(n for *_, n in plan) * bm * (2.0 * bn * k_total + terms * per_tile)
        k = Kernel(name, flops=2.0 * padded_rows * k_total * columns, bf16_flops=window,
                   bytes=(rows * cin + ks * ks * cin * cout + rows * cout) * item,
                   l2_bytes=tiles * (bm + bn) * k_total * item,
                   tail_s=longest / 2 / (PEAK_FLOPS[dtype] / SMS),
                   config=f"{bm}×{bn}" + (f", chains of {max(n for *_, n in plan)}"
                                          if max(n for *_, n in plan) > 1 else ""))
        if best is None or (k.seconds(dtype, l2_bytes_per_s)
                            < best.seconds(dtype, l2_bytes_per_s)):
            best = k
    return best


def fused_module(cfg, n, s, dtype, l2_bytes_per_s=L2_BYTES_PER_S, torchvision=False):
    """The three launches of one module; ``torchvision``: torchvision's block with its
    BatchNorm folded (no LRN in any epilogue, a 3×3 where the seed has its 5×5)."""
    cin, c1, c3r, c3, c5r, c5, cp = cfg
    item = ITEM[dtype]
    k5 = -(-c5r // 8) * 8  # the launcher pads a conv's input channels to 8 (none of the nine)
    ks5, lrn = (3, False) if torchvision else (5, True)
    ones = ((c1, c3r, c5r), (cp,))   # the pool projection's tiles apart: another operand
    common = dict(l2_bytes_per_s=l2_bytes_per_s, lrn=lrn)
    return [
        triton_gemm("1×1 GEMM (reductions + pool projection)", n, s, 1, cin, ones, item, dtype,
                    pool=True, **common),
        triton_gemm("3×3 GEMM", n, s, 3, c3r, ((c3,),), item, dtype, **common),
        triton_gemm(f"{ks5}×{ks5} GEMM", n, s, ks5, k5, ((c5,),), item, dtype, **common),
    ]


def eager_module(cfg, n, s, dtype):
    cin, c1, c3r, c3, c5r, c5, cp = cfg
    item, px = ITEM[dtype], n * s * s
    kernels = []

    def conv_bias_lrn_relu(label, cin_, cout, k):
        t = px * cout * item
        kernels.append(Kernel(f"conv{k}x{k} {label}", _conv_flops(px, cin_, cout, k),
                              px * cin_ * item + t + k * k * cin_ * cout * item))
        kernels.append(Kernel(f"bias {label}", 0.0, 2 * t))
        kernels.append(Kernel(f"LRN + ReLU {label}", 0.0,
                              (LRN_RELU_EAGER_READS + LRN_RELU_EAGER_WRITES) * t,
                              launches=LRN_RELU_EAGER_LAUNCHES))

    conv_bias_lrn_relu("branch 1", cin, c1, 1)
    conv_bias_lrn_relu("3x3 reduction", cin, c3r, 1)
    conv_bias_lrn_relu("5x5 reduction", cin, c5r, 1)
    conv_bias_lrn_relu("3x3", c3r, c3, 3)
    conv_bias_lrn_relu("5x5", c5r, c5, 5)
    kernels.append(Kernel("max pool", 0.0, 2 * px * cin * item))
    conv_bias_lrn_relu("pool projection", cin, cp, 1)
    kernels.append(Kernel("cat", 0.0, 2 * px * (c1 + c3 + c5 + cp) * item))
    return kernels


def ideal_module(cfg, n, s, dtype, torchvision=False):
    cin, c1, c3r, c3, c5r, c5, cp = cfg
    item, px = ITEM[dtype], n * s * s
    ks5 = 3 if torchvision else 5
    flops = (_conv_flops(px, cin, c1 + c3r + c5r + cp, 1) + _conv_flops(px, c3r, c3, 3)
             + _conv_flops(px, c5r, c5, ks5))
    weights = cin * (c1 + c3r + c5r + cp) + 9 * c3r * c3 + ks5 * ks5 * c5r * c5
    return [Kernel("one fused kernel", flops,
                   px * (cin + c1 + c3 + c5 + cp) * item + weights * item)]


IMPLEMENTATIONS = {"eager": eager_module, "fused": fused_module, "ideal": ideal_module}


def around_modules(n, dtype, implementation):
    """The network outside its inception modules at 224×224: the stem (conv 7×7/2, ReLU, max
    pool, LRN, conv 1×1, ReLU, conv 3×3, ReLU, LRN, max pool), the two max pools between stages
    and the head (average pool, linear), for inference.

    - ``eager``: cuDNN convolutions, each bias a pass of its own, then ReLU, pools and the LRNs
      as seven passes each.
    - ``compile`` (torch.compile, as we expect Inductor to lower it; not measured): cuDNN
      convolutions, each followed by one generated kernel for bias + ReLU (+ the LRN after it),
      pools and the first LRN one kernel each.
    - ``fused``: FusedGoogLeNet on the triton backend (modules.FusedStemConv): the 7×7 on cuDNN
      without bias, the max pool, then the bias and the ReLU on a quarter of the values (a pass
      each) and the extension's LRN; the 1×1 and 3×3 as Triton GEMMs with bias + ReLU (+ LRN)
      in the epilogue.
    - ``ideal``: bias + ReLU fused into each convolution and each LRN with its max pool.
    """
    item = ITEM[dtype]
    t1 = n * 112 * 112 * 64 * item          # conv 7×7 output
    t2 = n * 56 * 56 * 64 * item            # after the first max pool
    t3 = n * 56 * 56 * 192 * item           # conv 3×3 output
    flops = (_conv_flops(n * 112 * 112, 3, 64, 7) + _conv_flops(n * 56 * 56, 64, 64, 1)
             + _conv_flops(n * 56 * 56, 64, 192, 3))
    image = n * 224 * 224 * 3 * item
    convs = [Kernel("stem conv7x7", _conv_flops(n * 112 * 112, 3, 64, 7), image + t1),
             Kernel("stem conv1x1", _conv_flops(n * 56 * 56, 64, 64, 1), 2 * t2),
             Kernel("stem conv3x3", _conv_flops(n * 56 * 56, 64, 192, 3), t2 + t3)]
    assert abs(sum(k.flops for k in convs) - flops) < 1
    pool1 = Kernel("stem max pool 1", 0.0, t1 + t2)
    pools = [Kernel("stem max pool 2", 0.0, t3 + t3 / 4),
             Kernel("max pool after 3b", 0.0, n * 28 * 28 * 480 * item * 1.25),
             Kernel("max pool after 4e", 0.0, n * 14 * 14 * 832 * item * 1.25),
             Kernel("average pool + linear", 2.0 * n * 1024 * 1000,
                    n * 7 * 7 * 1024 * item + 1024 * 1000 * item)]
    if implementation == "ideal":
        return [Kernel("stem conv7x7 + bias + ReLU + max pool + LRN", convs[0].flops,
                       image + t2),
                Kernel("stem conv1x1 + bias + ReLU", convs[1].flops, 2 * t2),
                Kernel("stem conv3x3 + bias + ReLU + LRN + max pool", convs[2].flops,
                       t2 + t3 / 4), *pools[1:]]
    if implementation == "eager":
        passes = [Kernel(f"stem {what} {label}", 0.0, 2 * t)
                  for t, label in ((t1, "7x7"), (t2, "1x1"), (t3, "3x3"))
                  for what in ("bias", "ReLU")]
        lrns = [Kernel(f"stem LRN {label}", 0.0, 15 * t, launches=7)
                for t, label in ((t2, "1"), (t3, "2"))]
        return convs + passes + lrns + [pool1] + pools
    if implementation == "compile":
        return convs + [Kernel("stem bias + ReLU 7x7", 0.0, 2 * t1), pool1,
                        Kernel("stem LRN 1", 0.0, 2 * t2),
                        Kernel("stem bias + ReLU 1x1", 0.0, 2 * t2),
                        Kernel("stem bias + ReLU + LRN 3x3", 0.0, 2 * t3)] + pools
    assert implementation == "fused", implementation
    return [convs[0], pool1, Kernel("stem bias after the pool", 0.0, 2 * t2),
            Kernel("stem ReLU after the pool", 0.0, 2 * t2),
            Kernel("stem LRN 1 (extension)", 0.0, 2 * t2),
            triton_gemm("stem conv1x1 + bias + ReLU", n, 56, 1, 64, ((64,),), item, dtype,
                        lrn=False),
            triton_gemm("stem conv3x3 + bias + ReLU + LRN", n, 56, 3, 64, ((192,),), item,
                        dtype)] + pools


def network_estimate(n, dtype, implementation):
    """(FLOPs, bytes, seconds) of the whole network: around_modules + the nine modules."""
    kernels = around_modules(n, dtype, implementation)
    flops = sum(k.flops for k in kernels)
    nbytes = sum(k.bytes for k in kernels)
    seconds = sum(k.seconds(dtype) for k in kernels)
    for name in INCEPTION_CONFIGS:
        f, b, t, _ = estimate(name, n, dtype, implementation)
        flops, nbytes, seconds = flops + f, nbytes + b, seconds + t
    return flops, nbytes, seconds


def estimate(name, n, dtype, implementation):
    """(FLOPs, bytes, seconds, launches) of one module."""
    kernels = IMPLEMENTATIONS[implementation](INCEPTION_CONFIGS[name], n, SPATIAL_AT_224[name],
                                              dtype)
    return (sum(k.flops + k.bf16_flops for k in kernels), sum(k.bytes for k in kernels),
            sum(k.seconds(dtype) for k in kernels), sum(k.launches for k in kernels))


def module_table(batches, dtype):
    lines = [f"## Inception modules and the network, {dtype}: roofline estimates on the H200", "",
             "| module | batch | GFLOP (fused) | MB eager | MB fused | MB ideal | µs eager "
             "| µs fused | µs ideal | fused / ideal | eager / fused |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    totals = {}
    for n in batches:
        sums = dict(eager=0.0, fused=0.0, ideal=0.0)
        for name in INCEPTION_CONFIGS:
            e, f, i = (estimate(name, n, dtype, impl) for impl in ("eager", "fused", "ideal"))
            for impl, est in zip(sums, (e, f, i)):
                sums[impl] += est[2]
            lines.append(f"| {name} | {n} | {f[0] / 1e9:.1f} | {e[1] / 1e6:.1f} | "
                         f"{f[1] / 1e6:.1f} | {i[1] / 1e6:.1f} | {1e6 * e[2]:.1f} | "
                         f"{1e6 * f[2]:.1f} | {1e6 * i[2]:.1f} | {f[2] / i[2]:.2f} | "
                         f"{e[2] / f[2]:.2f} |")
        lines.append(f"| **nine** | {n} | | | | | {1e6 * sums['eager']:.1f} | "
                     f"{1e6 * sums['fused']:.1f} | {1e6 * sums['ideal']:.1f} | "
                     f"**{sums['fused'] / sums['ideal']:.2f}** | "
                     f"{sums['eager'] / sums['fused']:.2f} |")
        totals[n] = sums
    for n in batches:
        e, f, i = (network_estimate(n, dtype, impl) for impl in ("eager", "fused", "ideal"))
        around = {impl: sum(k.seconds(dtype) for k in around_modules(n, dtype, impl))
                  for impl in ("eager", "fused", "ideal")}
        lines.append(f"| network | {n} | {f[0] / 1e9:.1f} | {e[1] / 1e6:.1f} | {f[1] / 1e6:.1f} "
                     f"| {i[1] / 1e6:.1f} | {1e6 * e[2]:.1f} | {1e6 * f[2]:.1f} | "
                     f"{1e6 * i[2]:.1f} | {f[2] / i[2]:.2f} | {e[2] / f[2]:.2f} |")
        lines.append(f"| (stem, pools, head) | {n} | | | | | {1e6 * around['eager']:.1f} | "
                     f"{1e6 * around['fused']:.1f} | {1e6 * around['ideal']:.1f} | "
                     f"{around['fused'] / around['ideal']:.2f} | "
                     f"{around['eager'] / around['fused']:.2f} |")
    return lines, totals


def around_table(batches, dtype):
    """The network outside the modules: eager, torch.compile as expected, fused, ideal."""
    impls = ("eager", "compile", "fused", "ideal")
    lines = [f"## Stem, pools between stages and head, {dtype}", "",
             "| batch | " + " | ".join(f"µs {i}" for i in impls) + " | compile / fused |",
             "|---|" + "---|" * (len(impls) + 1)]
    for n in batches:
        t = {i: sum(k.seconds(dtype) for k in around_modules(n, dtype, i)) for i in impls}
        lines.append(f"| {n} | " + " | ".join(f"{1e6 * t[i]:.1f}" for i in impls)
                     + f" | {t['compile'] / t['fused']:.2f} |")
    return lines


def kernel_table(n, dtype):
    """Each fused kernel summed over the nine modules: where the fused time goes."""
    rows = {}
    for name in INCEPTION_CONFIGS:
        for k in fused_module(INCEPTION_CONFIGS[name], n, SPATIAL_AT_224[name], dtype):
            r = rows.setdefault(k.name, [0.0, 0.0, 0.0, 0.0])
            r[0] += k.flops + k.bf16_flops
            r[1] += k.bytes
            r[2] += k.l2_bytes
            r[3] += k.seconds(dtype)
    total = sum(r[3] for r in rows.values())
    lines = [f"## Fused kernels over the nine modules, batch {n}, {dtype}", "",
             "| kernel | GFLOP | MB HBM | GB L2 | FLOP per L2 byte | µs | share |",
             "|---|---|---|---|---|---|---|"]
    for name, (flops, nbytes, l2, seconds) in rows.items():
        lines.append(f"| {name} | {flops / 1e9:.1f} | {nbytes / 1e6:.1f} | {l2 / 1e9:.1f} | "
                     f"{flops / l2:.0f} | {1e6 * seconds:.1f} | {100 * seconds / total:.0f}% |")
    return lines


def launch_table(n, dtype):
    """Every fused launch of the nine modules: its config, FLOP per L2 byte and what bounds it
    (a GEMM needs PEAK / L2 bandwidth FLOP per byte to stay compute-bound)."""
    need = PEAK_FLOPS[dtype] / L2_BYTES_PER_S
    lines = [f"## Each fused launch, batch {n}, {dtype}: FLOP per L2 byte (compute-bound from "
             f"{need:.0f} at {L2_BYTES_PER_S / 1e12:g} TB/s)", "",
             "| module | launch | config | GFLOP | GB L2 | FLOP per L2 byte | µs | bound |",
             "|---|---|---|---|---|---|---|---|"]
    for name, cfg in INCEPTION_CONFIGS.items():
        for k in fused_module(cfg, n, SPATIAL_AT_224[name], dtype):
            lines.append(f"| {name} | {k.name} | {k.config} | "
                         f"{(k.flops + k.bf16_flops) / 1e9:.1f} | {k.l2_bytes / 1e9:.2f} | "
                         f"{k.flop_per_l2_byte():.0f} | {1e6 * k.seconds(dtype):.1f} | "
                         f"{k.bound(dtype)} |")
    return lines


def l2_table(n, dtype, ideal_s):
    """The nine modules' fused estimate at other L2 bandwidths (configs chosen at each): how
    much the assumed figure decides. Small tiles (this design's, held to BLOCK_N <= 128 by the
    LRN band in registers) move (BLOCK_M + BLOCK_N) · K bytes per 2 · BLOCK_M · BLOCK_N · K
    FLOPs; the ideal kernel's larger tiles would stay compute-bound."""
    lines = [f"## The L2 term, batch {n}, {dtype}: the nine modules at other L2 bandwidths", "",
             "| L2 bandwidth | fused µs | ideal µs | fused / ideal | FLOP per L2 byte |",
             "|---|---|---|---|---|"]
    for bw in L2_SENSITIVITY:
        picked = [k for name, cfg in INCEPTION_CONFIGS.items()
                  for k in fused_module(cfg, n, SPATIAL_AT_224[name], dtype, bw)]
        fused = sum(k.seconds(dtype, bw) for k in picked)
        flops = sum(k.flops + k.bf16_flops for k in picked)
        label = "not counted" if bw is None else f"{bw / 1e12:g} TB/s" + (
            " (the model's)" if bw == L2_BYTES_PER_S else "")
        lines.append(f"| {label} | {1e6 * fused:.0f} | {1e6 * ideal_s:.0f} | "
                     f"{fused / ideal_s:.2f} | {flops / sum(k.l2_bytes for k in picked):.0f} |")
    return lines


def torchvision_table(batches, dtype):
    """torchvision's GoogLeNet blocks (same channel plan, BatchNorm folded, no LRN, a 3×3 in
    place of the 5×5): fused against one ideal kernel per block."""
    lines = [f"## torchvision's GoogLeNet blocks (BatchNorm folded, no LRN), {dtype}", "",
             "| block | batch | GFLOP (fused) | µs fused | µs ideal | fused / ideal |",
             "|---|---|---|---|---|---|"]
    totals = {}
    for n in batches:
        fused_s = ideal_s = 0.0
        for name, cfg in INCEPTION_CONFIGS.items():
            s = SPATIAL_AT_224[name]
            fused = fused_module(cfg, n, s, dtype, torchvision=True)
            f = sum(k.seconds(dtype) for k in fused)
            i = sum(k.seconds(dtype) for k in ideal_module(cfg, n, s, dtype, torchvision=True))
            fused_s, ideal_s = fused_s + f, ideal_s + i
            lines.append(f"| {name} | {n} | {sum(k.flops for k in fused) / 1e9:.1f} | "
                         f"{1e6 * f:.1f} | {1e6 * i:.1f} | {f / i:.2f} |")
        lines.append(f"| **nine** | {n} | | {1e6 * fused_s:.1f} | {1e6 * ideal_s:.1f} | "
                     f"**{fused_s / ideal_s:.2f}** |")
        totals[n] = fused_s / ideal_s
    return lines, totals


def report(batches=(32, 256), dtype="bf16") -> str:
    lines = ["# Roofline model (benchmarks/roofline.py)", "",
             f"Ceilings: {PEAK_FLOPS[dtype] / 1e12:.0f} TFLOP/s {dtype}, "
             f"{HBM_BYTES_PER_S / 1e12:.1f} TB/s HBM, {L2_BYTES_PER_S / 1e12:g} TB/s from L2 to "
             f"shared memory (assumed, not measured), {L2_BYTES / 1e6:.0f} MB L2, "
             f"{LAUNCH_S * 1e6:.0f} µs per launch; a module's kernels run one after another.", ""]
    table, totals = module_table(batches, dtype)
    lines += table + [""] + around_table(batches, dtype) + [""] + kernel_table(max(batches),
                                                                             dtype) + [""]
    n = max(batches)
    exact, gemm, window = [0.0, 0.0], [0.0, 0.0], 0.0  # [the 1×1 GEMM, all GEMMs]
    for name, cfg in INCEPTION_CONFIGS.items():
        cin, c1, c3r, _, c5r, _, cp = cfg
        s = SPATIAL_AT_224[name]
        ones = _conv_flops(n * s * s, cin, c1 + c3r + c5r + cp, 1)
        exact = [exact[0] + ones, exact[1] + ideal_module(cfg, n, s, dtype)[0].flops]
        kernels = fused_module(cfg, n, s, dtype)
        gemm = [gemm[0] + kernels[0].flops, gemm[1] + sum(k.flops for k in kernels)]
        window += sum(k.bf16_flops for k in kernels)
    lines += [f"Compute waste over the nine modules, batch {n} (tile padding, LRN halo columns, "
              f"K steps): 1×1 GEMMs {100 * (gemm[0] / exact[0] - 1):.1f} %, all GEMMs "
              f"{100 * (gemm[1] / exact[1] - 1):.1f} %; the window product adds "
              f"{100 * window / exact[1]:.1f} % (bf16).", ""]
    lines += l2_table(n, dtype, totals[n]["ideal"]) + [""] + launch_table(n, dtype) + [""]
    tv_lines, tv_totals = torchvision_table(batches, dtype)
    lines += tv_lines + [""]
    lines.append(f"torchvision's nine blocks, batch {n}, {dtype}: fused/ideal = "
                 f"{tv_totals[n]:.2f}")
    lines.append(f"nine modules, batch {n}, {dtype}: fused/ideal = "
                 f"{totals[n]['fused'] / totals[n]['ideal']:.2f}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="32,256")
    parser.add_argument("--dtype", choices=list(ITEM), default="bf16")
    parser.add_argument("--out", help="folder to write roofline.md into")
    args = parser.parse_args(argv)
    text = report([int(b) for b in args.batches.split(",")], args.dtype)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "roofline.md"), "w") as f:
            f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
