"""How the 1×1 GEMM + LRN kernels tile their output channels, and their Hopper config list.

Pure Python (no Triton import): the launcher, the autotuner's pruning and
benchmarks/roofline.py all read the same plan, so the model counts the waste the kernel has.

A column tile is BLOCK_N consecutive output channels of the stacked GEMM. LRN needs each
channel's window inside its own branch, so a tile stores only the channels whose whole in-branch
window it holds: a branch that fits in the tile needs no halo, a branch cut by the tile's end
loses its last (size - 1) // 2 channels to the next tile, which starts size // 2 channels before
them (not before its branch's start). Small branches share a tile (the window product keeps
them apart).

A chain is a wider tile that one program computes as ``n`` tiles of BLOCK_N columns, one after
another, carrying each tile's last EDGE columns into the next: no halo inside a chain, only at
its ends. Its tiles run on one SM in turn, so a long chain lengthens the launch's last wave;
chain_pieces weighs the columns saved against that.
"""
from __future__ import annotations

import math

# Hopper candidates (BLOCK_M, BLOCK_N, num_warps, num_stages); the K step is not tuned, it
# follows K (k_step). 3-4 stages of cp.async hide HBM latency behind the wgmma of the previous
# steps; narrow N where rounding the branches up to a wide tile would waste. BLOCK_N stops at
# 128: the window product's [BLOCK_N, BLOCK_N] band takes registers while it is built, and at
# 256 (and at 128 with 4 warps) every dtype spilled (0.1-1.7 KB per thread, sm_90, triton 3.6
# and 3.8); 128×32 with 4 warps spilled under 3.6 in fp32 (its pool tiles' registers). The two
# WIDE tiles move fewer operand bytes from L2 per FLOP (128×128: 64 FLOP per byte, 256×64: 51;
# 128×64: 43, 64×64: 32), which bounds these GEMMs in benchmarks/roofline.py's estimates (its L2
# term), but compile without spills only in some launches (below). A pool tile's
# loop runs at a K step of 32 (16 in fp32) with two stages (nine operand tiles per stage), in
# the same shared memory. tests/test_codegen.py compiles each config in every dtype and checks
# all of this.
CONFIGS = [
    (64, 32, 4, 4),
    (64, 64, 8, 4),
    (128, 64, 8, 4),
    (64, 128, 8, 3),
    (256, 64, 8, 3),
    (128, 128, 8, 3),
]
# Measured exclusions (sm_90 compiles of every launch, triton 3.6 and 3.8): 128×64 spilled in
# fp32 in the 1×1 launch with pool tiles (24-56 B per thread when it also stores the
# pre-activations, 255 registers without); when that launch stores the pre-activations (the
# pool projection's to a tensor of its own), 64×128 spilled under triton 3.6 (8-80 B, fp16 and
# fp32) and 128×64 in fp16 (48 B).
FP32_EXCLUDED = {(128, 64, 8, 4)}
TRAINING_POOL_EXCLUDED = {(128, 64, 8, 4), (64, 128, 8, 3)}
# The WIDE tiles spilled, under triton 3.6 or 3.8, in launches with pool tiles (up to 0.9 KB per
# thread, 1 KB when they also store the pre-activations) and in the 3×3 / 5×5 launches of
# training (up to 250 B: the pre-activation store); 256×64 in fp32 needs 248 KB of shared memory
# (three stages at a K step of 64, and the band).
WIDE = {(256, 64, 8, 3), (128, 128, 8, 3)}
FP32_EXCLUDED |= {(256, 64, 8, 3)}
POOL_K = {2: 32, 4: 16}  # K step of pool tiles by operand bytes
# Columns a chain hands from one tile to the next (the narrowest tl.dot operand): the windows
# of the 8 channels either side of a boundary lie in them and the next tile's first 16.
EDGE = 16


def k_step(k: int) -> int:
    """The K step of a launch whose GEMM has ``k`` = KS·KS·Cin terms per output (the taps'
    channels flattened: a step may span taps): of 64 and 32, the one of least padding (ties:
    64). A 16-wide step would waste less, but no config moves its operand tiles in 16-byte
    copies at that width."""
    return min((64, 32), key=lambda step: (-(-k // step) * step, -step))


# Chains cost registers: the loop over a chain's tiles keeps more values live, and so does the
# edge it hands on (3×3 in bf16 at 64×32: 56 registers unchained, about 145 chained). Compiled
# for sm_90 (triton 3.6), chained launches with pool tiles or pre-activation stores spilled in
# every config, and the inference 3×3 / 5×5 launches at 64×128 (fp16, fp32), 128×128 and
# 256×64; these stayed without spills. Only these run chains (their config's CHAIN): in the
# same launch, the others run single tiles, so the wide tiles stay for the autotuner to take.
CHAIN_CONFIGS = {(64, 32, 4, 4), (64, 64, 8, 4), (128, 64, 8, 4)}
CHAIN_SHAPES = {cfg[:2] for cfg in CHAIN_CONFIGS}


def usable(config, itemsize: int, step: int = 64, *, pool: bool = False,
           training: bool = False) -> bool:
    """Whether ``config`` may run a launch with ``itemsize``-byte operands and K step ``step``
    (``pool``: the launch has pool tiles; ``training``: it also stores pre-activations): not
    excluded above, and every thread's share of each operand tile (A: BLOCK_M × step,
    B: step × BLOCK_N; pool tiles at POOL_K) at least one 16-byte cp.async copy."""
    bm, bn, warps, _ = config
    threads = 32 * warps
    shares = [bm * step, step * bn, bm * POOL_K[itemsize], POOL_K[itemsize] * bn]
    return ((itemsize != 4 or tuple(config) not in FP32_EXCLUDED)
            and not (pool and training and tuple(config) in TRAINING_POOL_EXCLUDED)
            and not ((pool or training) and tuple(config) in WIDE)
            and all(n * itemsize // threads >= 16 for n in shares))


def branch_bounds(channels):
    """[(first, end)) channel ranges of the branches stacked in ``channels``."""
    bounds, start = [], 0
    for c in channels:
        bounds.append((start, start + c))
        start += c
    return bounds


def column_plan(channels, size: int, block_n: int) -> list[tuple[int, int, int]]:
    """Column tiles (start, store_lo, store_hi): the tile computes channels
    [start, start + block_n) and stores [store_lo, store_hi). Tiles cover every channel once."""
    halo_lo, halo_hi = size // 2, (size - 1) // 2
    if block_n <= halo_lo + halo_hi:
        raise ValueError(f"BLOCK_N = {block_n} cannot hold an LRN window of {size} channels")
    bounds = branch_bounds(channels)
    total = bounds[-1][1] if bounds else 0
    tiles, lo = [], 0
    while lo < total:
        first = next(b0 for b0, b1 in bounds if b0 <= lo < b1)
        start = max(first, lo - halo_lo)
        end = start + block_n
        hi = min(end, total)
        cut = next(((b0, b1) for b0, b1 in bounds if b1 > end), None)
        if cut is not None:  # that branch continues past the tile: keep its full windows only
            hi = min(end, max(cut[0], end - halo_hi))
        tiles.append((start, lo, hi))
        lo = hi
    return tiles


def chain_plan(groups, size: int, block_n: int, pieces: int = 1):
    """Column chains (start, lo, hi, n) of a GEMM that stacks ``groups`` of branches (a tuple
    of channel tuples), channel numbers running on across groups: the chain computes ``n`` tiles
    of ``block_n`` channels from ``start`` (n <= ``pieces``) and stores [lo, hi), as one tile of
    pieces · block_n columns would (column_plan). No chain mixes two groups (the pool
    projection, which reads another operand, is a group of its own). A window wider than the
    carried edge, or no window (``size`` 1: no halo to save), allows no chain longer than a
    tile."""
    pieces = pieces if 1 < size and size // 2 <= EDGE // 2 else 1
    chains, offset = [], 0
    for channels in groups:
        total, width = sum(channels), pieces * block_n
        for start, lo, hi in column_plan(channels, size, width):
            n = -(-(min(start + width, total) - start) // block_n)
            chains.append((start + offset, lo + offset, hi + offset, n))
        offset += total
    return chains


def chain_pieces(groups, size: int, block_m: int, block_n: int, rows: int, k: int,
                 sms: int) -> int:
    """Tiles per chain for one launch of ``rows`` pixel rows and ``k`` K terms (padded to the K
    step) on ``sms`` SMs: of 1 up to a whole group, the one of least cost, in FLOPs per SM: the
    launch's work spread over the SMs plus half its longest program (the last wave's expected
    idle time). Ties: the shorter chain."""
    blocks = -(-rows // block_m)

    def cost(pieces):
        # A tile's GEMM and window product (one term); in chains, the edge's two [16] @ [16, 16]
        per_tile = 2 * block_m * (block_n * (k + block_n) + (EDGE * 2 * EDGE if pieces > 1 else 0))
        chains = chain_plan(groups, size, block_n, pieces)
        tiles = sum(n for *_, n in chains)
        return (blocks * tiles * per_tile / sms + max(n for *_, n in chains) * per_tile / 2,
                pieces)

    longest = max(-(-sum(channels) // block_n) for channels in groups)
    return min(cost(p) for p in range(1, longest + 1))[1]


def launch_chains(groups, size: int, block_m: int, block_n: int, rows: int, k: int, sms: int,
                  *, pool: bool = False, training: bool = False):
    """The chains a launch runs at one tile shape (chain_plan at chain_pieces' length): chains
    only in a launch without pool tiles or pre-activation stores, at a shape of CHAIN_CONFIGS
    (the others spilled)."""
    chained = not pool and not training and (block_m, block_n) in CHAIN_SHAPES
    pieces = chain_pieces(groups, size, block_m, block_n, rows, k, sms) if chained else 1
    return chain_plan(groups, size, block_n, pieces)


def even_plan(groups, size: int) -> bool:
    """Whether every channel count of ``groups`` and every tile start and store bound of their
    plans (at each BLOCK_N of CONFIGS, in chains of any length) is even: then the kernel stores
    channel pairs (its EVEN)."""
    longest = max((-(-sum(channels) // 32) for channels in groups), default=1)
    plans = [chain_plan(groups, size, bn, p) for bn in {cfg[1] for cfg in CONFIGS}
             for p in range(1, longest + 1)]
    return (all(c % 2 == 0 for channels in groups for c in channels)
            and all(v % 2 == 0 for chains in plans for chain in chains for v in chain[:3]))


def plan_row(block_m: int, block_n: int) -> int:
    """Row of a launch's plan table that holds the chains of a (BLOCK_M, BLOCK_N) tile; the
    kernel computes the same from its constexprs."""
    return block_m // 64 * 3 + block_n // 64


def waste(groups, size: int, block_n: int, pieces: int = 1) -> float:
    """Computed columns per stored column (1.0 = no waste), in chains of up to ``pieces``
    tiles."""
    total = sum(sum(channels) for channels in groups)
    tiles = sum(n for *_, n in chain_plan(groups, size, block_n, pieces))
    return tiles * block_n / total if total else 1.0


def prune(configs, groups, size: int, rows: int, itemsize: int = 2, step: int = 64,
          **launch):
    """The configs worth timing for one GEMM: the BLOCK_N of least column waste (the least it
    can reach: in chains as long as a group where the launch may chain) and every wider one,
    and BLOCK_M no taller than the rows need (a batch-1 7×7 has 49). A wider tile computes more wasted columns but moves
    fewer operand bytes from L2 per FLOP ((BLOCK_M + BLOCK_N) · K bytes per 2 · BLOCK_M ·
    BLOCK_N · K FLOPs), and with tiles this small that traffic, not the tensor cores, may bound
    the GEMM (benchmarks/roofline.py's L2 term): the autotuner measures which wins. A narrower
    tile than the least-waste one loses on both counts. ``launch``: usable's pool and
    training."""
    configs = [cfg for cfg in configs if usable(cfg, itemsize, step, **launch)] or configs
    may_chain = not (launch.get("pool") or launch.get("training"))   # as launch_chains
    by_n = {cfg[1]: waste(groups, size, cfg[1], 1 << 10 if may_chain and cfg[1] in {
        shape[1] for shape in CHAIN_SHAPES} else 1) for cfg in configs}
    best = min(by_n.values())
    narrowest = min(bn for bn, w in by_n.items() if w <= best * (1 + 1e-9))
    kept = [cfg for cfg in configs if cfg[1] >= narrowest]
    short = [cfg for cfg in kept if cfg[0] <= max(64, 2 ** math.ceil(math.log2(max(rows, 1))))]
    return short or kept
