"""Convolution + bias + LRN + ReLU as one Triton GEMM over channels_last pixels.

Three launchers share the kernel:
- ``reductions_1x1``: the three 1×1 convolutions of an inception module that read the same input
  (branch 1, 3×3 reduction, 5×5 reduction) as one GEMM against their stacked weights. Branch 1
  is stored straight into its channel slice of the module output, the reductions into buffers.
- ``pool_projection``: the 3×3 / stride 1 / pad 1 max pool computed while loading the GEMM's
  operand (no pooled tensor in memory), then the pool projection, stored into the output slice.
- ``conv_lrn_relu``: a KS×KS "same" convolution (the 3×3 and 5×5 branches) as an implicit GEMM
  whose K loop walks the taps' channels flattened (a step may span taps): the LRN + ReLU
  epilogue stores the branch into its slice, so no pre-activation goes through memory.

The GEMM: rows are the N·H·W pixels of the batch, each a contiguous vector of channels
(channels_last), columns the output channels, K the taps × input channels. Column tiles
follow the branch boundaries (kernels/tiling.py): LRN needs each channel's in-branch window, so
a tile stores only the channels whose window it holds, and the launcher passes the plan as a
small table. Where the batch has row blocks enough, a program computes a chain of tiles one
after another and hands each tile's last 16 columns of conv + bias to the next: the channels
around a boundary inside the chain get their windows from both, and no columns are computed
twice (a halo only at a chain's ends). The window sums are one more tensor-core dot,
(u²) @ band, with band[j, i] = 1 when channel j lies in channel i's window inside the same
branch; its operands are 16-bit (the 0/1 band is exact) and u² is split into as many bf16
terms as the output's precision needs. Programs run in groups of GROUP_M row tiles × all
chains, so the chains of a row block read x while it is in L2.
"""
from __future__ import annotations

import itertools
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import tiling

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
GROUP_M = 8


def configs() -> list[triton.Config]:
    """Autotune candidates from kernels/tiling.py, each saying whether it runs chains. The
    interpreter runs every config it is given, so it gets one."""
    if INTERPRET:
        return [triton.Config(meta(64, 64))]
    return [triton.Config(meta(bm, bn), num_warps=w, num_stages=s)
            for bm, bn, w, s in tiling.CONFIGS]


def meta(block_m: int, block_n: int) -> dict:
    """The tile's constexprs: its shape, and whether it runs chains."""
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, CHAIN=(block_m, block_n) in tiling.CHAIN_SHAPES)


def branch_groups(channels, pool_from):
    """The launch's branches as tiling groups: those before channel ``pool_from``, then the
    pool projection's (if any)."""
    ends = list(itertools.accumulate(channels))
    before = tuple(c for c, end in zip(channels, ends) if end <= pool_from)
    return tuple(g for g in (before, tuple(channels[len(before):])) if g)


def config_tuple(config: triton.Config) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages), as in tiling.CONFIGS."""
    return (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps,
            config.num_stages)


def _prune(configs, named_args, **kwargs):
    a = named_args
    channels = [a["C0"], a["C1"], a["C2"], a["C_TOTAL"] - a["C0"] - a["C1"] - a["C2"]]
    channels = channels[:kwargs["NUM_BRANCHES"]]
    as_tuples = {config_tuple(c): c for c in configs}
    kept = tiling.prune(list(as_tuples), branch_groups(channels, a["POOL_FROM"]), kwargs["SIZE"],
                        a["M"], a["x_ptr"].element_size(), kwargs["BLOCK_K"], pool=kwargs["POOL"],
                        training=kwargs["SAVE_U"])
    return [as_tuples[t] for t in kept]


@triton.jit
def _branch_of(c, C0, C1, C2):
    return (c >= C0).to(tl.int32) + (c >= C0 + C1).to(tl.int32) + (c >= C0 + C1 + C2).to(tl.int32)


@triton.jit
def _band(c_in, c_out, C0, C1, C2, HALO_LO: tl.constexpr, HALO_HI: tl.constexpr,
          UPCAST: tl.constexpr):
    """The window product's 0/1 matrix [len(c_in), len(c_out)]: 1 where channel c_in[j] lies in
    channel c_out[i]'s LRN window inside the same branch."""
    offset = c_in[:, None] - c_out[None, :]
    in_window = ((_branch_of(c_in, C0, C1, C2)[:, None] == _branch_of(c_out, C0, C1, C2)[None, :])
                 & (offset >= -HALO_LO) & (offset <= HALO_HI))
    band = tl.where(in_window, 1.0, 0.0).to(tl.bfloat16)  # (interpreter: bool -> bf16 wrong)
    if UPCAST:
        band = band.to(tl.float32)
    return band


@triton.jit
def _window_sums(y, band, s, WINDOW_TERMS: tl.constexpr, UPCAST: tl.constexpr):
    """s + (y²) @ band, y² split into bf16 terms (each term exact in the dot, the sum in fp32):
    8 more bits of y² per term."""
    rest = y * y
    for _ in tl.static_range(WINDOW_TERMS):
        term = rest.to(tl.bfloat16)
        rest = rest - term.to(tl.float32)
        if UPCAST:
            term = term.to(tl.float32)
        s = tl.dot(term, band, s)
    return s


@triton.jit
def _lrn_relu(y, s, lrn_k, alpha_over_size, beta, RELU_FIRST: tl.constexpr):
    y = y * tl.exp2(-beta * tl.log2(lrn_k + alpha_over_size * s))   # y * d ** -beta
    if not RELU_FIRST:
        y = tl.where(y < 0.0, 0.0, y)            # ReLU; NaN stays NaN
    return y


@triton.jit
def _halves(t, BLOCK_M: tl.constexpr, WIDTH: tl.constexpr):
    return tl.split(tl.permute(tl.reshape(t, (BLOCK_M, 2, WIDTH // 2)), (0, 2, 1)))


@triton.jit
def _concat(a, b, BLOCK_M: tl.constexpr):
    """[a | b]: two [BLOCK_M, 8] into [BLOCK_M, 16]."""
    return tl.reshape(tl.permute(tl.join(a, b), (0, 2, 1)), (BLOCK_M, 16))


@triton.jit
def _edges(u, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The first and the last 16 columns of u [BLOCK_M, BLOCK_N] (BLOCK_N 32, 64 or 128):
    halves of halves, register moves and no arithmetic."""
    head, tail = _halves(u, BLOCK_M, BLOCK_N)
    if BLOCK_N >= 64:
        head, _ = _halves(head, BLOCK_M, BLOCK_N // 2)
        _, tail = _halves(tail, BLOCK_M, BLOCK_N // 2)
    if BLOCK_N >= 128:
        head, _ = _halves(head, BLOCK_M, BLOCK_N // 4)
        _, tail = _halves(tail, BLOCK_M, BLOCK_N // 4)
    return head, tail


@triton.jit
def _store_branches(y, rows, c, keep, o0_ptr, o0m, o1_ptr, o1m, o2_ptr, o2m, o3_ptr, o3m,
                    C0, C1, C2, NUM_BRANCHES: tl.constexpr):
    """y's columns c (channels of the stacked branches) into their destinations where keep."""
    out = y.to(o0_ptr.dtype.element_ty)
    # Each branch's channels as a range of c (not branch == i): with EVEN, its hinted bounds
    # tell the compiler the mask is constant over channel pairs. One branch: keep says it all.
    if NUM_BRANCHES == 1:
        tl.store(o0_ptr + rows * o0m + c[None, :], out, mask=keep)
    else:
        tl.store(o0_ptr + rows * o0m + c[None, :], out, mask=keep & (c < C0)[None, :])
        tl.store(o1_ptr + rows * o1m + (c - C0)[None, :], out,
                 mask=keep & ((c >= C0) & (c < C0 + C1))[None, :])
    if NUM_BRANCHES > 2:
        tl.store(o2_ptr + rows * o2m + (c - C0 - C1)[None, :], out,
                 mask=keep & ((c >= C0 + C1) & (c < C0 + C1 + C2))[None, :])
    if NUM_BRANCHES > 3:
        tl.store(o3_ptr + rows * o3m + (c - C0 - C1 - C2)[None, :], out,
                 mask=keep & (c >= C0 + C1 + C2)[None, :])


# Specialization stays on for pointers, K and the row strides: "divisible by 16" is what lets
# the loads be 16-byte vectors and cp.async copies. Not on M, H, W (row masks and the border
# tests only), the branch sizes and POOL_FROM (column masks and the tile's kind), the plan's
# stride (scalar loads) and M_BUCKET (an autotune key the kernel never reads): their
# divisibility changes no code.
@triton.jit(do_not_specialize=["M", "H", "W", "C0", "C1", "C2", "C_TOTAL", "POOL_FROM",
                               "plan_stride", "M_BUCKET"])
def _conv_lrn_relu_kernel(
    x_ptr, sxm,                       # input rows [M, K]: pixel m at x_ptr + m * sxm
    w_ptr, b_ptr,                     # weights [POOL_FROM, KS, KS, K] (contiguous) and bias
    wp_ptr, bp_ptr,                   # pool projection [C_TOTAL - POOL_FROM, K] and bias
    o0_ptr, o0m,                      # rows of branch 0's destination: channels [0, C0)
    o1_ptr, o1m,                      # branch 1: [C0, C0 + C1)
    o2_ptr, o2m,                      # branch 2: [C0 + C1, C0 + C1 + C2)
    o3_ptr, o3m,                      # branch 3: [C0 + C1 + C2, C_TOTAL)
    u_ptr, um,                        # rows of the pre-activations [M, POOL_FROM] (SAVE_U)
    up_ptr, upm,                      # and of the pool projection's [M, C_TOTAL - POOL_FROM]
    plan_ptr, plan_stride,            # chains per tile shape: [count, (start, lo, hi, n) * count]
    M, H, W, K, C0, C1, C2, C_TOTAL, POOL_FROM, M_BUCKET,
    lrn_k, alpha_over_size, beta,     # LRN: d = lrn_k + alpha_over_size * window sum of squares
    SIZE: tl.constexpr,               # LRN window, in channels (1 without LRN)
    LRN: tl.constexpr,                # False: no LRN (conv + bias + ReLU)
    RELU_FIRST: tl.constexpr,         # ReLU before the LRN (GoogLeNet's stem) instead of after
    KS: tl.constexpr,                 # convolution KS×KS, stride 1, "same" padding (odd KS)
    POOL: tl.constexpr,               # tiles from channel POOL_FROM on read maxpool3×3(x) (KS 1)
    NUM_BRANCHES: tl.constexpr,       # destinations used (1-4)
    UPCAST: tl.constexpr,             # dots in fp32: the interpreter's bf16 dot is wrong
    DOT_PRECISION: tl.constexpr,      # "tf32" or "ieee" for fp32 operands
    WINDOW_TERMS: tl.constexpr,       # bf16 terms of u² in the window product (1-3)
    SAVE_U: tl.constexpr,             # also store conv + bias, before LRN (for the backward)
    EVEN: tl.constexpr,               # every channel bound, tile start, destination stride even
    K8: tl.constexpr,                 # K and x's row stride multiples of 8 (not of 16): hinted
    CHAINED: tl.constexpr,            # some tile shape's plan has chains (of several tiles)
    POOL_K: tl.constexpr,             # K step of pool tiles: their operand is the max of 9 loads
    BLOCK_K: tl.constexpr,            # K step of the other tiles (tiling.k_step)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CHAIN: tl.constexpr,              # this config runs chains (tiling.CHAIN_CONFIGS)
    GROUP: tl.constexpr,
):
    HALO_LO: tl.constexpr = SIZE // 2
    HALO_HI: tl.constexpr = (SIZE - 1) // 2
    CARRY: tl.constexpr = CHAIN and CHAINED   # this launch's plan has chains at this config

    # Grouped raster: GROUP row tiles × every chain, the chains of a row block together.
    plan = plan_ptr + (BLOCK_M // 64 * 3 + BLOCK_N // 64) * plan_stride   # tiling.plan_row
    num_pid_n = tl.load(plan)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    pid = tl.program_id(0)
    per_group = GROUP * num_pid_n
    first_m = (pid // per_group) * GROUP
    group_rows = tl.minimum(num_pid_m - first_m, GROUP)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows
    first = tl.load(plan + 1 + 4 * pid_n)
    store_lo = tl.load(plan + 2 + 4 * pid_n)
    store_hi = tl.load(plan + 3 + 4 * pid_n)
    pieces = 1
    if CARRY:
        pieces = tl.load(plan + 4 + 4 * pid_n)
    if EVEN:
        # What lets the stores move channel pairs (4 bytes in 16-bit types, 8 in fp32) instead
        # of single values: half the store instructions, addresses and mask registers.
        first = tl.multiple_of(first, 2)
        store_lo = tl.multiple_of(store_lo, 2)
        store_hi = tl.multiple_of(store_hi, 2)
        # A hint on an argument does not reach the compiler's analysis; twice its half (the
        # same value, it is even) does.
        C0 = C0 // 2 * 2
        C1 = C1 // 2 * 2
        C2 = C2 // 2 * 2
        POOL_FROM = POOL_FROM // 2 * 2
        o0m = o0m // 2 * 2   # (4b's and 4c's 24-channel reduction: a stride of 24)
        o1m = o1m // 2 * 2
        o2m = o2m // 2 * 2
        o3m = o3m // 2 * 2
        um = um // 2 * 2
        upm = upm // 2 * 2

    if K8:
        # Triton specializes on "divisible by 16" only: a 24-channel input (4b's and 4c's 5×5)
        # keeps its 16-byte operand vectors through this hint (eight times its eighth, as above).
        K = K // 8 * 8
        sxm = sxm // 8 * 8

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = m < M
    x_rows = x_ptr + m.to(tl.int64) * sxm
    rows = m.to(tl.int64)[:, None]
    h = (m // W) % H   # for the pool and KS > 1 (folded away in a 1×1 launch without pool tiles)
    w = m % W
    pool_tile = False
    if POOL:
        pool_tile = first >= POOL_FROM   # chains never mix the pool projection with the others
    # A chain's tiles one after another, each handing its last 16 columns of conv + bias to the
    # next (tail_u): the windows of the 8 channels either side of a boundary span both tiles.
    tail_u = tl.zeros((BLOCK_M, 16), dtype=tl.float32)
    for p in range(pieces):
        start = first + p * BLOCK_N
        c = start + tl.arange(0, BLOCK_N)              # output channel of each column
        c_mask = c < C_TOTAL
        if LRN:
            # Built before the K loop: the band waits in shared memory (BLOCK_N² · 2 bytes)
            # instead of being built in the registers the epilogue needs; 128 × 128 tiles
            # compile without spills only so.
            band = _band(c, c, C0, C1, C2, HALO_LO, HALO_HI, UPCAST)

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if pool_tile:
            wp_cols = wp_ptr + (c - POOL_FROM).to(tl.int64) * K
            for k0 in tl.range(0, K, POOL_K, num_stages=2):  # nine tiles per stage: two stages
                kk = k0 + tl.arange(0, POOL_K)
                k_mask = kk < K
                a = tl.full((BLOCK_M, POOL_K), float("-inf"), x_ptr.dtype.element_ty)
                for dh in tl.static_range(3):
                    for dw in tl.static_range(3):
                        inside = (m_mask & (h + dh - 1 >= 0) & (h + dh - 1 < H)
                                  & (w + dw - 1 >= 0) & (w + dw - 1 < W))
                        v = tl.load(x_rows[:, None] + ((dh - 1) * W + (dw - 1)) * sxm
                                    + kk[None, :], mask=inside[:, None] & k_mask[None, :],
                                    other=float("-inf"))
                        a = tl.maximum(a, v, propagate_nan=tl.PropagateNan.ALL)  # NaN wins
                # -inf in padding rows/columns would make -inf * 0 = NaN in the dot
                a = tl.where(m_mask[:, None] & k_mask[None, :], a, 0.0).to(
                    x_ptr.dtype.element_ty)
                b = tl.load(wp_cols[None, :] + kk[:, None],
                            mask=c_mask[None, :] & k_mask[:, None], other=0.0)
                if UPCAST:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            bias = tl.load(bp_ptr + c - POOL_FROM, mask=c_mask, other=0.0).to(tl.float32)
        else:
            w_cols = w_ptr + c.to(tl.int64) * (KS * KS * K)   # weights [C, KS, KS, K]
            # One loop over (tap, channel) flattened, as the weights lie: a K step may span
            # taps (a 5×5 over 16 channels is 13 steps of 32, not 25 half-empty ones) and the
            # software pipeline runs across taps. With KS > 1, K % 8 == 0 (the launcher pads):
            # every aligned run of 8 flattened channels lies in one tap, so the loads stay
            # 16-byte vectors.
            for k0 in range(0, KS * KS * K, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                k_mask = kk < KS * KS * K
                if KS == 1:
                    a = tl.load(x_rows[:, None] + kk[None, :],
                                mask=m_mask[:, None] & k_mask[None, :], other=0.0)
                else:  # the pixel (dh, dw) away, zero outside the image ("same" padding)
                    tap = kk // K
                    dh = tap // KS - KS // 2
                    dw = tap % KS - KS // 2
                    hh = h[:, None] + dh[None, :]
                    ww = w[:, None] + dw[None, :]
                    inside = (m_mask[:, None] & k_mask[None, :] & (hh >= 0) & (hh < H)
                              & (ww >= 0) & (ww < W))
                    a = tl.load(x_rows[:, None] + ((dh * W + dw) * sxm + kk % K)[None, :],
                                mask=inside, other=0.0)
                b = tl.load(w_cols[None, :] + kk[:, None],
                            mask=(c_mask & (c < POOL_FROM))[None, :] & k_mask[:, None],
                            other=0.0)
                if UPCAST:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            bias = tl.load(b_ptr + c, mask=c_mask & (c < POOL_FROM), other=0.0).to(tl.float32)
        u = acc + bias[None, :]        # columns past the tile's branches are exactly 0
        keep = m_mask[:, None] & ((c >= store_lo) & (c < store_hi))[None, :]
        if SAVE_U:   # stored before the epilogue: u's registers are free for it
            if pool_tile:
                tl.store(up_ptr + rows * upm + (c - POOL_FROM)[None, :],
                         u.to(up_ptr.dtype.element_ty), mask=keep)
            else:
                tl.store(u_ptr + rows * um + c[None, :], u.to(u_ptr.dtype.element_ty), mask=keep)

        if LRN and CARRY:
            # The 16 channels around the tile boundary, the previous tile's last 8 (left
            # waiting) and this tile's first 8: their windows lie in the previous tile's last 16
            # columns (tail_u; zeros before the first tile) and this one's first 16. Done before
            # this tile's own window product, while fewer of its tensors are live.
            edge = start - 8 + tl.arange(0, 16)
            y_tail = tail_u
            y_head, tail_next = _edges(u, BLOCK_M, BLOCK_N)
            if RELU_FIRST:
                y_tail = tl.where(y_tail < 0.0, 0.0, y_tail)
                y_head = tl.where(y_head < 0.0, 0.0, y_head)
            s_edge = _window_sums(y_tail, _band(start - 16 + tl.arange(0, 16), edge, C0, C1, C2,
                                                HALO_LO, HALO_HI, UPCAST),
                                  tl.zeros((BLOCK_M, 16), dtype=tl.float32), WINDOW_TERMS, UPCAST)
            s_edge = _window_sums(y_head, _band(start + tl.arange(0, 16), edge, C0, C1, C2,
                                                HALO_LO, HALO_HI, UPCAST),
                                  s_edge, WINDOW_TERMS, UPCAST)
            y_edge = _concat(_halves(y_tail, BLOCK_M, 16)[1], _halves(y_head, BLOCK_M, 16)[0],
                             BLOCK_M)
            waiting = (edge >= store_lo) & (edge < store_hi) & (p > 0)
            _store_branches(_lrn_relu(y_edge, s_edge, lrn_k, alpha_over_size, beta, RELU_FIRST),
                            rows, edge, m_mask[:, None] & waiting[None, :],
                            o0_ptr, o0m, o1_ptr, o1m, o2_ptr, o2m, o3_ptr, o3m,
                            C0, C1, C2, NUM_BRANCHES)
            tail_u = tail_next

        y = u
        if RELU_FIRST:
            y = tl.where(y < 0.0, 0.0, y)            # ReLU; NaN stays NaN
        if LRN:
            s = _window_sums(y, band, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32),
                             WINDOW_TERMS, UPCAST)
            y = _lrn_relu(y, s, lrn_k, alpha_over_size, beta, RELU_FIRST)
        elif not RELU_FIRST:
            y = tl.where(y < 0.0, 0.0, y)            # ReLU; NaN stays NaN

        if CARRY:   # not the 8 channels either side of a boundary inside the chain
            keep = keep & ((c >= start + tl.where(p > 0, 8, 0))
                           & (c < start + BLOCK_N - tl.where(p < pieces - 1, 8, 0)))[None, :]
        _store_branches(y, rows, c, keep, o0_ptr, o0m, o1_ptr, o1m, o2_ptr, o2m, o3_ptr, o3m,
                        C0, C1, C2, NUM_BRANCHES)


# Layout is not in the key: every launch reads channels_last rows. M_BUCKET is the batch's
# power-of-two bucket: a config tuned at batch 256 is not reused at batch 1.
_TUNE_KEY = ["M_BUCKET", "K", "C0", "C1", "C2", "C_TOTAL", "POOL_FROM", "KS", "BLOCK_K", "LRN"]
_kernel = triton.autotune(configs(), key=_TUNE_KEY,
                          prune_configs_by={"early_config_prune": _prune})(_conv_lrn_relu_kernel)

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# bf16 terms of u² in the window sums: 8 bits each, enough for the output's precision (fp32
# "ieee" gets all 24 bits; tf32's own products keep 10).
_WINDOW_TERMS = {torch.float16: 2, torch.bfloat16: 1, "tf32": 2, "ieee": 3}


def fp32_precision() -> str:
    """"tf32" or "ieee" for fp32 operands, decided as torch decides it for cuDNN convolutions:
    ``torch.backends.cudnn.conv.fp32_precision``, inherited from ``cudnn.fp32_precision`` and
    ``torch.backends.fp32_precision`` when "none". The legacy ``allow_tf32`` flag is not read:
    torch refuses to mix the two APIs once a user has set the new one."""
    for setting in (torch.backends.cudnn.conv, torch.backends.cudnn, torch.backends):
        value = getattr(setting, "fp32_precision", "none")
        if value != "none":
            return "tf32" if value == "tf32" else "ieee"
    return "tf32"  # cuDNN's default for convolutions


def pixel_rows(t: torch.Tensor) -> int | None:
    """The pixel stride when ``t`` [N, C, H, W] is a channels_last matrix of N·H·W rows with
    contiguous channels (a whole tensor or a channel slice of one), else None."""
    N, C, H, W = t.shape
    sn, sc, sh, sw = t.stride()
    if C > 1 and sc != 1:
        return None
    row = sw if W > 1 else sh // W if H > 1 else sn // (H * W) if N > 1 else C
    if row < C or (W > 1 and sw != row) or (H > 1 and sh != W * row) or (
            N > 1 and sn != H * W * row):
        return None
    return row


_PLANS: dict = {}
# Tile shapes whose chains a plan table holds: the configs' and the interpreter's.
_SHAPES = sorted({cfg[:2] for cfg in tiling.CONFIGS} | {(64, 64)})


def streaming_multiprocessors(device) -> int:
    """SMs of ``device``; off a GPU (the interpreter, tests/aot_compile.py), the H200's 132."""
    if device.type != "cuda":
        return 132
    return torch.cuda.get_device_properties(device).multi_processor_count


def _plan_table(groups, size, rows, k, device, **launch) -> tuple[torch.Tensor, int, dict, bool,
                                                                   bool]:
    """The column chains of every tile shape for a launch of ``rows`` pixel rows and ``k`` K
    terms (``launch``: its pool and training, tiling.launch_chains), as one int32 table
    (cached: made once per module shape, batch and device, before any CUDA graph capture), its
    row stride, {(BLOCK_M, BLOCK_N): chain count}, whether every channel count, tile start and
    store bound is even (tiling.even_plan) and whether some chain has more than one tile."""
    key = (tuple(groups), size, rows, k, str(device), tuple(sorted(launch.items())))
    if key not in _PLANS:
        sms = streaming_multiprocessors(device)
        plans = {(bm, bn): tiling.launch_chains(groups, size, bm, bn, rows, k, sms, **launch)
                 for bm, bn in _SHAPES}
        stride = 1 + 4 * max(len(p) for p in plans.values())
        table = torch.zeros((max(tiling.plan_row(*shape) for shape in plans) + 1) * stride,
                            dtype=torch.int32)
        for shape, chains in plans.items():
            row = tiling.plan_row(*shape) * stride
            table[row] = len(chains)
            table[row + 1:row + 1 + 4 * len(chains)] = torch.tensor(chains).flatten()
        chained = any(n > 1 for chains in plans.values() for *_, n in chains)
        _PLANS[key] = (table.to(device), stride, {shape: len(p) for shape, p in plans.items()},
                       tiling.even_plan(groups, size), chained)
    return _PLANS[key]


def launch_arguments(x, dests, channels, lrn, weight=None, bias=None, pool_weight=None,
                     pool_bias=None, ks=1, preactivation=None, pool_preactivation=None,
                     relu_first=False):
    """(kernel, grid, positional arguments, constexpr keywords) of one launch.

    ``channels`` are the branches in the order of ``dests``; with ``pool_weight`` the last one
    is the pool projection (maxpool3×3(x) · pool_weightᵀ), the others read x through ``weight``
    [C, KS, KS, Cin]. ``preactivation``, if given, receives the conv + bias (before LRN) of
    every branch but the pool projection, in launch order, and ``pool_preactivation`` the pool
    projection's (required then). ``lrn`` None: no LRN (conv + bias + ReLU); ``relu_first``:
    the ReLU before the LRN. x, every destination and the pre-activations are channels_last
    row matrices (see ``pixel_rows``), weights contiguous. tests/test_codegen.py compiles what
    this returns, so the checked code is the code that runs."""
    size, alpha, beta, k = lrn if lrn is not None else (1, 0.0, 0.0, 1.0)  # 1: no halo
    N, K, H, W = x.shape
    M = N * H * W
    pooled = pool_weight is not None
    pool_from = sum(channels) - (channels[-1] if pooled else 0)
    step = tiling.k_step(ks * ks * K)
    save = preactivation is not None
    table, stride, chains, even_plan, chained = _plan_table(
        branch_groups(channels, pool_from), size, M, -(-ks * ks * K // step) * step, x.device,
        pool=pooled, training=save)
    slots = list(dests) + [dests[0]] * (4 - len(dests))   # unused slots: never stored to
    c0, c1, c2 = (list(channels) + [0, 0])[:3]
    weight, bias = (weight, bias) if weight is not None else (pool_weight, pool_bias)
    pool_weight, pool_bias = (pool_weight, pool_bias) if pooled else (weight, bias)
    precision = fp32_precision()
    terms = _WINDOW_TERMS[x.dtype if x.dtype != torch.float32 else precision]

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * chains[meta["BLOCK_M"], meta["BLOCK_N"]],)

    if save and pooled and pool_preactivation is None:
        raise ValueError("launch_arguments: a launch with the pool projection that saves "
                         "pre-activations needs pool_preactivation too")
    u = preactivation if save else dests[0]               # never stored to unless SAVE_U
    up = pool_preactivation if save and pooled else u     # never stored to without pool tiles
    stored = [(t, pixel_rows(t)) for t in (*slots, u, up)]   # destinations and their strides
    # EVEN: stores move channel pairs, so every channel bound and every destination's row
    # stride must be even (a stride not divisible by 16 is not specialized: it is hinted).
    even = even_plan and all(rows % 2 == 0 for _, rows in stored)
    # K8: both multiples of 8 but not both of 16, which Triton's specialization already sees.
    x_rows = pixel_rows(x)
    k8 = K % 8 == 0 and x_rows % 8 == 0 and (K % 16 != 0 or x_rows % 16 != 0)
    args = [x, x_rows, weight, bias, pool_weight, pool_bias,
            *(a for pair in stored for a in pair), table, stride,
            M, H, W, K, c0, c1, c2, sum(channels), pool_from, triton.next_power_of_2(M),
            float(k), float(alpha) / size, float(beta)]
    # Without LRN the ReLU's place makes no difference: one compiled kernel for both orders.
    constexprs = dict(SIZE=size, LRN=lrn is not None, RELU_FIRST=relu_first and lrn is not None,
                      KS=ks, POOL=pooled, NUM_BRANCHES=len(channels),
                      UPCAST=INTERPRET, DOT_PRECISION=precision, WINDOW_TERMS=terms,
                      SAVE_U=save, EVEN=even, K8=k8, CHAINED=chained,
                      POOL_K=tiling.POOL_K[x.element_size()], BLOCK_K=step, GROUP=GROUP_M)
    return _kernel, grid, args, constexprs


def _launch(x, dests, channels, lrn, preactivation=None, pool_preactivation=None, **options):
    """Launch with ``dests`` (and the pre-activations) of any strides: those that are not
    channels_last row matrices go through staging copies, x through one conversion."""
    N, _, H, W = x.shape
    if N * H * W == 0:
        return
    if pixel_rows(x) is None:  # NCHW or other strides: one conversion
        x = x.contiguous(memory_format=torch.channels_last)
    saves = [t for t in (preactivation, pool_preactivation) if t is not None]
    wanted = list(dests) + saves
    staged = [d if pixel_rows(d) is not None else
              torch.empty_like(d, memory_format=torch.channels_last) for d in wanted]
    u, up = (staged[len(dests):] + [None, None])[:2]
    kernel, grid, args, constexprs = launch_arguments(x, staged[:len(dests)], channels, lrn,
                                                      preactivation=u, pool_preactivation=up,
                                                      **options)
    kernel[grid](*args, **constexprs)
    for d, s in zip(wanted, staged):
        if s is not d:
            d.copy_(s)


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, outs, who: str, ks=1):
    """Validates the arguments; returns the weight as the kernel reads it: [C, KS, KS, Cin]."""
    if x.dim() != 4:
        raise ValueError(f"{who}: expected a 4-D input [N, C, H, W], got shape {tuple(x.shape)}")
    if weight.dim() == 2 and ks == 1:
        weight = weight[:, :, None, None]
    if weight.dim() != 4 or weight.shape[2:] != (ks, ks):
        raise ValueError(f"{who}: expected {ks}×{ks} weights [C, Cin, {ks}, {ks}], got shape "
                         f"{tuple(weight.shape)}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"{who}: weights of shape {tuple(weight.shape)} need an input with "
                         f"{weight.shape[1]} channels, got shape {tuple(x.shape)}")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"{who}: bias of shape {tuple(bias.shape)} does not match weights "
                         f"of shape {tuple(weight.shape)}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{who}: dtype {x.dtype} not supported (use one of {SUPPORTED_DTYPES})")
    for name, t in [("weight", weight), ("bias", bias), *outs]:
        if t.device != x.device:
            raise ValueError(f"{who}: {name} is on {t.device} but the input is on {x.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"{who}: {name} is {t.dtype} but the input is {x.dtype}")
    check_device(x, who)
    return weight.permute(0, 2, 3, 1).contiguous()  # no copy for 1×1 or channels_last weights


def check_device(x: torch.Tensor, who: str):
    if x.device.type != "cuda" and not INTERPRET:
        raise RuntimeError(f"{who}: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for "
                           f"CPU tensors); got a tensor on {x.device}")


def _optional(name, t):
    return [(name, t)] if t is not None else []


def _check_dest(name, t, shape):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def reductions_1x1(x, weight, bias, channels, out1, lrn=(5, 1e-3, 0.75, 2.0), *,
                   pool_weight=None, pool_bias=None, out_pool=None, preactivation=None,
                   pool_preactivation=None):
    """Branch 1 and the two reductions of an inception module, one GEMM; with ``pool_weight``
    the pool projection too, in the same launch (x read from memory once).

    x: [N, Cin, H, W]; weight: the stacked 1×1 weights [c1 + c3r + c5r, Cin(, 1, 1)]; bias
    [c1 + c3r + c5r]; channels = (c1, c3r, c5r). Writes relu(lrn(conv(x)[:, :c1])) into ``out1``
    ([N, c1, H, W], e.g. a channel slice of the module output) and returns the two reductions,
    relu(lrn(.)) of the next c3r and c5r channels, as new channels_last tensors; with the pool
    projection, relu(lrn(conv1x1(max_pool2d(x, 3, 1, 1)))) goes into ``out_pool``. ``lrn`` =
    (size, alpha, beta, k); each branch is normalized over its own channels. For a backward
    pass, ``preactivation`` ([N, c1 + c3r + c5r, H, W]) receives conv + bias before LRN, and
    with the pool projection ``pool_preactivation`` ([N, cp, H, W], then required) its own.

    The kernel reads x as channels_last pixel rows: other layouts cost one conversion copy, and
    an output that is not a channels_last matrix (NCHW, say) is written through a staging copy.
    """
    c1, c3r, c5r = channels
    weight = _check(x, weight, bias, [("out1", out1), *_optional("preactivation", preactivation)],
                    "reductions_1x1")
    N, _, H, W = x.shape
    if weight.shape[0] != c1 + c3r + c5r:
        raise ValueError(f"reductions_1x1: channels {tuple(channels)} do not add up to the "
                         f"{weight.shape[0]} rows of the stacked weights")
    _check_dest("reductions_1x1: out1", out1, (N, c1, H, W))
    red3 = torch.empty((N, c3r, H, W), device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last)
    red5 = torch.empty((N, c5r, H, W), device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last)
    dests, pool = [out1, red3, red5], {}
    if pool_weight is not None:
        pool_weight = _check(x, pool_weight, pool_bias,
                             [("out_pool", out_pool),
                              *_optional("pool_preactivation", pool_preactivation)],
                             "reductions_1x1 (pool projection)")
        cp = pool_weight.shape[0]
        _check_dest("reductions_1x1: out_pool", out_pool, (N, cp, H, W))
        if preactivation is not None:
            if pool_preactivation is None:
                raise ValueError("reductions_1x1: with the pool projection, preactivation "
                                 "needs pool_preactivation too")
            _check_dest("reductions_1x1: pool_preactivation", pool_preactivation, (N, cp, H, W))
        dests, channels = dests + [out_pool], (*channels, cp)
        pool = dict(pool_weight=pool_weight, pool_bias=pool_bias,
                    pool_preactivation=pool_preactivation)
    if preactivation is not None:
        _check_dest("reductions_1x1: preactivation", preactivation, (N, c1 + c3r + c5r, H, W))
    _launch(x, dests, channels, lrn, preactivation, weight=weight, bias=bias, **pool)
    return red3, red5


def pool_projection(x, weight, bias, out, lrn=(5, 1e-3, 0.75, 2.0)):
    """relu(lrn(conv1x1(max_pool2d(x, 3, 1, 1)))) into ``out`` [N, Cp, H, W].

    The max pool happens in the GEMM's operand load: no pooled tensor is written to memory.
    Layouts as in ``reductions_1x1``, which can run this in its own launch.
    """
    weight = _check(x, weight, bias, [("out", out)], "pool_projection")
    N, _, H, W = x.shape
    _check_dest("pool_projection: out", out, (N, weight.shape[0], H, W))
    _launch(x, [out], (weight.shape[0],), lrn, pool_weight=weight, pool_bias=bias)
    return out


def conv_lrn_relu(x, weight, bias, out, lrn=(5, 1e-3, 0.75, 2.0), preactivation=None, *,
                  relu_first=False):
    """relu(lrn(conv2d(x, weight, bias, padding=KS // 2))) into ``out`` [N, C, H, W].

    weight: [C, Cin, KS, KS] with KS odd (stride 1, "same" padding: the 3×3 and 5×5 branches).
    The convolution is an implicit GEMM over the pixels' shifted rows: no im2col buffer, and the
    pre-activation never leaves the chip. Layouts as in ``reductions_1x1``; weights are read as
    [C, KS, KS, Cin] (a copy unless they are channels_last already). ``preactivation`` ([N, C,
    H, W]) receives conv + bias before LRN, for a backward pass. GoogLeNet's stem orders its
    epilogues otherwise: ``relu_first`` gives lrn(relu(conv)), and ``lrn=None`` relu(conv).
    """
    ks = weight.shape[-1] if weight.dim() == 4 and weight.shape[2] == weight.shape[3] else 0
    if ks % 2 == 0:
        raise ValueError(f"conv_lrn_relu: expected square weights with an odd kernel size "
                         f"[C, Cin, KS, KS], got shape {tuple(weight.shape)}")
    weight = _check(x, weight, bias, [("out", out), *_optional("preactivation", preactivation)],
                    "conv_lrn_relu", ks)
    N, K, H, W = x.shape
    _check_dest("conv_lrn_relu: out", out, (N, weight.shape[0], H, W))
    if preactivation is not None:
        _check_dest("conv_lrn_relu: preactivation", preactivation, (N, weight.shape[0], H, W))
    if K % 8:
        # Rows of a multiple of 8 channels keep the operand loads 16-byte cp.async copies
        # (kernel's K8): zero channels added to x and the weights. None of the nine modules
        # pays this copy (their 5×5 reductions have 16, 24, 32 or 48 channels).
        padded = torch.empty((N, K + -K % 8, H, W), device=x.device, dtype=x.dtype,
                             memory_format=torch.channels_last)
        padded[:, K:] = 0
        padded[:, :K] = x
        x, weight = padded, F.pad(weight, (0, -K % 8))
    _launch(x, [out], (weight.shape[0],), lrn, preactivation, weight=weight, bias=bias, ks=ks,
            relu_first=relu_first)
    return out
