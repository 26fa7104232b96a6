"""1×1 convolution + bias + LRN + ReLU as one Triton GEMM, stored through strides.

Two launchers share the kernel:
- ``reductions_1x1``: the three 1×1 convolutions of an inception module that read the same input
  (branch 1, 3×3 reduction, 5×5 reduction) as one GEMM against their stacked weights. Branch 1
  is stored straight into its channel slice of the module output, the reductions into buffers.
- ``pool_projection``: the 3×3 / stride 1 / pad 1 max pool computed while loading the GEMM's
  operand (no pooled tensor in memory), then the pool projection, stored into the output slice.

The GEMM: rows are the pixels of one image (M = H·W), columns the output channels, K the input
channels. LRN needs each channel's ±size/2 neighbours, so column tiles overlap by that halo: a
tile of BLOCK_N columns stores only its BLOCK_N - (size - 1) inner ones. The window sums are one
more small tensor-core dot, (u²) @ band, where band[j, i] = 1 when channel j lies in the window of
channel i inside the same branch: that keeps the window inside each branch and costs BLOCK_N / K
of the main GEMM, far cheaper than leaving the tile.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def configs(pool: bool) -> list[triton.Config]:
    """Autotune candidates (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages).

    The pool variant's nine window loads would each be multi-buffered in shared memory by the
    software pipeliner (over 200 KB in fp32), so it runs unpipelined. The interpreter runs every
    config it is given, so it gets one.
    """
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64})]
    stages = 1 if pool else 3
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=stages)
        for bm, bn, bk, w in [(64, 64, 32, 4), (128, 64, 32, 4), (128, 128, 32, 8)]
    ]


# Shape and batch-stride arguments vary from module to module: specializing on them (== 1,
# divisible by 16) would compile a new kernel per shape for no gain. Channel and pixel strides
# stay specialized: a stride of 1 is what makes loads vectorize.
@triton.jit(do_not_specialize=["sxn", "o0n", "o1n", "o2n", "H", "W", "K", "C0", "C1", "C_TOTAL"])
def _conv1x1_lrn_relu_kernel(
    x_ptr, sxn, sxc, sxh, sxw,        # input [N, K, H, W], any strides
    w_ptr, swc, swk,                  # stacked weights [C_TOTAL, K]
    b_ptr,                            # stacked bias [C_TOTAL]
    o0_ptr, o0n, o0c, o0h, o0w,       # destination of branch 0: channels [0, C0)
    o1_ptr, o1n, o1c, o1h, o1w,       # branch 1: channels [C0, C0 + C1) (NUM_BRANCHES == 3)
    o2_ptr, o2n, o2c, o2h, o2w,       # branch 2: channels [C0 + C1, C_TOTAL) (NUM_BRANCHES == 3)
    H, W, K, C0, C1, C_TOTAL,
    lrn_k, alpha_over_size, beta,     # LRN: d = lrn_k + alpha_over_size * window sum of squares
    SIZE: tl.constexpr,               # LRN window, in channels
    POOL: tl.constexpr,               # max pool 3×3/s1/p1 the input while loading it
    NUM_BRANCHES: tl.constexpr,       # 1 or 3 destinations
    UPCAST: tl.constexpr,             # dot in fp32 (the interpreter's bf16 dot is wrong)
    DOT_PRECISION: tl.constexpr,      # "tf32" or "ieee" for fp32 operands
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    HALO_LO: tl.constexpr = SIZE // 2
    HALO_HI: tl.constexpr = (SIZE - 1) // 2
    STEP: tl.constexpr = BLOCK_N - HALO_LO - HALO_HI   # columns each tile stores

    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    HW = H * W
    tiles_per_image = tl.cdiv(HW, BLOCK_M)
    n = (pid_m // tiles_per_image).to(tl.int64)
    hw = (pid_m % tiles_per_image) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = hw < HW
    h = hw // W
    w = hw % W
    c = pid_n * STEP - HALO_LO + tl.arange(0, BLOCK_N)   # output channel of each column
    c_mask = (c >= 0) & (c < C_TOTAL)

    x_img = x_ptr + n * sxn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_mask = kk < K
        if POOL:
            a = tl.full((BLOCK_M, BLOCK_K), float("-inf"), x_ptr.dtype.element_ty)
            for dh in tl.static_range(3):
                for dw in tl.static_range(3):
                    hh = h + (dh - 1)
                    ww = w + (dw - 1)
                    inside = m_mask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                    v = tl.load(x_img + hh[:, None] * sxh + ww[:, None] * sxw + kk[None, :] * sxc,
                                mask=inside[:, None] & k_mask[None, :], other=float("-inf"))
                    a = tl.maximum(a, v, propagate_nan=tl.PropagateNan.ALL)  # NaN wins, as in ATen
            # -inf in padding rows/columns would make -inf * 0 = NaN in the dot
            a = tl.where(m_mask[:, None] & k_mask[None, :], a, 0.0).to(x_ptr.dtype.element_ty)
        else:
            a = tl.load(x_img + h[:, None] * sxh + w[:, None] * sxw + kk[None, :] * sxc,
                        mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(w_ptr + c[None, :] * swc + kk[:, None] * swk,
                    mask=c_mask[None, :] & k_mask[:, None], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)

    bias = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32)
    u = acc + bias[None, :]        # columns outside [0, C_TOTAL) are exactly 0

    # LRN window sums: s[:, i] = sum_j u[:, j]^2 * band[j, i]
    branch = (c >= C0).to(tl.int32) + (c >= C0 + C1).to(tl.int32)
    offset = c[:, None] - c[None, :]
    band = (branch[:, None] == branch[None, :]) & (offset >= -HALO_LO) & (offset <= HALO_HI)
    s = tl.dot(u * u, band.to(tl.float32), input_precision=DOT_PRECISION)
    d = lrn_k + alpha_over_size * s
    y = u * tl.exp2(-beta * tl.log2(d))          # u * d ** -beta
    y = tl.where(y < 0.0, 0.0, y)                # ReLU; NaN stays NaN

    col = tl.arange(0, BLOCK_N)
    keep = m_mask[:, None] & (c_mask & (col >= HALO_LO) & (col < HALO_LO + STEP))[None, :]
    out = y.to(o0_ptr.dtype.element_ty)
    tl.store(o0_ptr + n * o0n + h[:, None] * o0h + w[:, None] * o0w + c[None, :] * o0c, out,
             mask=keep & (c < C0)[None, :])
    if NUM_BRANCHES == 3:
        c1 = c - C0
        tl.store(o1_ptr + n * o1n + h[:, None] * o1h + w[:, None] * o1w + c1[None, :] * o1c, out,
                 mask=keep & ((c >= C0) & (c < C0 + C1))[None, :])
        c2 = c - C0 - C1
        tl.store(o2_ptr + n * o2n + h[:, None] * o2h + w[:, None] * o2w + c2[None, :] * o2c, out,
                 mask=keep & (c >= C0 + C1)[None, :])


_TUNE_KEY = ["H", "W", "K", "C_TOTAL"]
_reductions_kernel = triton.autotune(configs(pool=False), key=_TUNE_KEY)(_conv1x1_lrn_relu_kernel)
_pool_kernel = triton.autotune(configs(pool=True), key=_TUNE_KEY)(_conv1x1_lrn_relu_kernel)

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, outs, who: str):
    if x.dim() != 4:
        raise ValueError(f"{who}: expected a 4-D input [N, C, H, W], got shape {tuple(x.shape)}")
    if weight.dim() == 4:
        if weight.shape[2:] != (1, 1):
            raise ValueError(f"{who}: expected 1×1 weights, got shape {tuple(weight.shape)}")
        weight = weight.flatten(1)
    if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"{who}: weights of shape {tuple(weight.shape)} need an input with "
                         f"{weight.shape[-1]} channels, got shape {tuple(x.shape)}")
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
    if x.device.type != "cuda" and not INTERPRET:
        raise RuntimeError(f"{who}: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for "
                           f"CPU tensors); got a tensor on {x.device}")
    return weight


def _launch(x, weight, bias, dests, channels, pool, lrn):
    size, alpha, beta, k = lrn
    N, K, H, W = x.shape
    c_total = weight.shape[0]
    if N * H * W == 0:
        return
    dests = list(dests) + [dests[0]] * (3 - len(dests))   # unused slots: never stored to
    fp32_precision = "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    halo = size - 1

    def grid(meta):
        return (N * triton.cdiv(H * W, meta["BLOCK_M"]),
                triton.cdiv(c_total, meta["BLOCK_N"] - halo))

    kernel = _pool_kernel if pool else _reductions_kernel
    kernel[grid](
        x, *x.stride(),
        weight, *weight.stride(),
        bias,
        *(arg for d in dests for arg in (d, *d.stride())),
        H, W, K, channels[0], channels[1] if len(channels) > 1 else 0, c_total,
        float(k), float(alpha) / size, float(beta),
        SIZE=size, POOL=pool, NUM_BRANCHES=len(channels),
        UPCAST=INTERPRET and x.dtype == torch.bfloat16,
        DOT_PRECISION=fp32_precision,
    )


def _check_dest(name, t, shape):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def reductions_1x1(x, weight, bias, channels, out1, lrn=(5, 1e-3, 0.75, 2.0)):
    """Branch 1 and the two reductions of an inception module, one GEMM.

    x: [N, Cin, H, W]; weight: the stacked 1×1 weights [c1 + c3r + c5r, Cin(, 1, 1)]; bias
    [c1 + c3r + c5r]; channels = (c1, c3r, c5r). Writes relu(lrn(conv(x)[:, :c1])) into ``out1``
    ([N, c1, H, W], any strides, e.g. a channel slice of the module output) and returns the two
    reductions, relu(lrn(.)) of the next c3r and c5r channels, as new tensors in x's layout.
    ``lrn`` = (size, alpha, beta, k); each branch is normalized over its own channels.
    """
    c1, c3r, c5r = channels
    weight = _check(x, weight, bias, [("out1", out1)], "reductions_1x1")
    N, _, H, W = x.shape
    if weight.shape[0] != c1 + c3r + c5r:
        raise ValueError(f"reductions_1x1: channels {tuple(channels)} do not add up to the "
                         f"{weight.shape[0]} rows of the stacked weights")
    _check_dest("reductions_1x1: out1", out1, (N, c1, H, W))
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    red3 = torch.empty((N, c3r, H, W), device=x.device, dtype=x.dtype, memory_format=layout)
    red5 = torch.empty((N, c5r, H, W), device=x.device, dtype=x.dtype, memory_format=layout)
    _launch(x, weight, bias, [out1, red3, red5], (c1, c3r, c5r), pool=False, lrn=lrn)
    return red3, red5


def pool_projection(x, weight, bias, out, lrn=(5, 1e-3, 0.75, 2.0)):
    """relu(lrn(conv1x1(max_pool2d(x, 3, 1, 1)))) into ``out`` [N, Cp, H, W] (any strides).

    The max pool happens in the GEMM's operand load: no pooled tensor is written to memory.
    """
    weight = _check(x, weight, bias, [("out", out)], "pool_projection")
    N, _, H, W = x.shape
    _check_dest("pool_projection: out", out, (N, weight.shape[0], H, W))
    _launch(x, weight, bias, [out], (weight.shape[0],), pool=True, lrn=lrn)
    return out
