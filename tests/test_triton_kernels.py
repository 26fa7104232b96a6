"""Triton kernels: interpreter numerics on CPU, compilation for the H200, and GPU numerics."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from googlenet_fused import backends
from googlenet_fused.reference import INCEPTION_CONFIGS
from helpers import assert_matches, plain_lowp

pytestmark = pytest.mark.skipif(backends.TRITON_ERROR is not None,
                                reason=f"triton unusable: {backends.TRITON_ERROR}")
if backends.TRITON_ERROR is None:
    from googlenet_fused.kernels import conv1x1_lrn_relu as K

LRN = (5, 1e-3, 0.75, 2.0)
ON_GPU = torch.cuda.is_available()


def lrn_relu(u):
    return F.relu(F.local_response_norm(u, *LRN))


def reference_reductions(x, w, b, channels):
    z = F.conv2d(x, w[:, :, None, None], b)
    return [lrn_relu(part) for part in z.split(list(channels), 1)]


def reference_pool(x, w, b):
    return lrn_relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), w[:, :, None, None], b))


def make_input(shape, dtype, layout, device):
    x = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(shape[0], shape[1] + 3, *shape[2:], device=device).to(dtype)[:, 2:-1]
    return x


def run_case(n, cin, hw, channels, cp, dtype, layout, device):
    x = make_input((n, cin, *hw), dtype, layout, device)
    scale = cin ** -0.5 * 3  # realistic pre-activation magnitudes
    w = (scale * torch.randn(sum(channels), cin, device=device)).to(dtype)
    b = torch.randn(sum(channels), device=device).to(dtype)
    wp = (scale * torch.randn(cp, cin, device=device)).to(dtype)
    bp = torch.randn(cp, device=device).to(dtype)
    c1 = channels[0]
    big = torch.full((n, c1 + cp + 7, *hw), 777.0, device=device, dtype=dtype)
    if layout == "channels_last":
        big = big.contiguous(memory_format=torch.channels_last)
    out1, outp = big[:, 3:3 + c1], big[:, 3 + c1:3 + c1 + cp]
    red3, red5 = K.reductions_1x1(x, w, b, channels, out1, LRN)
    K.pool_projection(x, wp, bp, outp, LRN)
    got = [out1, red3, red5, outp]
    x64, w64, b64, wp64, bp64 = (t.double().cpu() for t in (x, w, b, wp, bp))
    ref64 = reference_reductions(x64, w64, b64, channels) + [reference_pool(x64, wp64, bp64)]
    lowp = [None] * 4
    if dtype != torch.float32:
        def plain(ts):
            x_, w_, b_, wp_, bp_ = ts
            return reference_reductions(x_, w_, b_, channels) + [reference_pool(x_, wp_, bp_)]
        lowp = [t.cpu() for t in plain_lowp(plain, [x, w, b, wp, bp])]
    for name, g, r, l in zip(["branch1", "red3", "red5", "pool"], got, ref64, lowp):
        assert_matches(g.cpu(), r, l, what=f"{name} {dtype} {layout} {tuple(x.shape)}")
    untouched = torch.cat([big[:, :3], big[:, 3 + c1 + cp:]], 1)
    assert (untouched == 777).all(), "wrote outside the output slices"


# ---------------------------------------------------------------------- interpreter (CPU)
# fp32 tolerance: tf32 does not exist in the interpreter, so fp32 is exact here.
@pytest.mark.skipif(ON_GPU, reason="interpreter tests run without a GPU")
@pytest.mark.parametrize("name", list(INCEPTION_CONFIGS))
def test_interpreter_inception_configs(name):
    cin, c1, c3r, _, c5r, _, cp = INCEPTION_CONFIGS[name]
    run_case(1, cin, (3, 3), (c1, c3r, c5r), cp, torch.float32, "nchw", "cpu")


@pytest.mark.skipif(ON_GPU, reason="interpreter tests run without a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("n, cin, hw, channels, cp", [
    (1, 1, (1, 1), (1, 1, 1), 1),
    (3, 17, (2, 5), (3, 17, 1), 5),
    (1, 130, (5, 5), (130, 3, 17), 17),
    (3, 3, (5, 2), (1, 130, 2), 3),
])
def test_interpreter_odd_shapes(dtype, layout, n, cin, hw, channels, cp):
    run_case(n, cin, hw, channels, cp, dtype, layout, "cpu")


@pytest.mark.skipif(ON_GPU, reason="interpreter tests run without a GPU")
def test_interpreter_nan_propagates_through_pool_and_gemm():
    x = torch.randn(1, 8, 4, 4)
    x[0, 2, 1, 1] = float("nan")
    w, b = torch.randn(6, 8), torch.randn(6)
    out = torch.empty(1, 6, 4, 4)
    K.pool_projection(x, w, b, out, LRN)
    ref = reference_pool(x, w, b)
    assert torch.equal(torch.isnan(out), torch.isnan(ref)) and torch.isnan(out).any()


def test_bad_input_errors():
    x = torch.randn(2, 8, 4, 4)
    out = torch.empty(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"need an input with 9 channels.*\(2, 8, 4, 4\)"):
        K.reductions_1x1(x, torch.randn(6, 9), torch.randn(6), (3, 2, 1), out)
    with pytest.raises(ValueError, match="4-D"):
        K.pool_projection(x[0], torch.randn(3, 8), torch.randn(3), out)
    with pytest.raises(TypeError, match="float64"):
        K.pool_projection(x, torch.randn(3, 8, dtype=torch.float64), torch.randn(3), out)
    with pytest.raises(ValueError, match="do not add up"):
        K.reductions_1x1(x, torch.randn(6, 8), torch.randn(6), (3, 2, 2), out)
    with pytest.raises(ValueError, match=r"out1 must have shape \(2, 3, 4, 4\)"):
        K.reductions_1x1(x, torch.randn(6, 8), torch.randn(6), (3, 2, 1), torch.empty(2, 4, 4, 4))
    with pytest.raises(TypeError, match="not supported"):
        K.pool_projection(x.double(), torch.randn(3, 8).double(), torch.randn(3).double(),
                          out.double())
    if ON_GPU:
        with pytest.raises(ValueError, match="on cpu but the input is on cuda"):
            K.pool_projection(x.cuda(), torch.randn(3, 8), torch.randn(3).cuda(), out.cuda())


# --------------------------------------------------------------- compile for the H200 (AOT)
@pytest.fixture(scope="module")
def h200_builds():
    script = os.path.join(os.path.dirname(__file__), "aot_compile.py")
    res = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("pool", [False, True], ids=["reductions", "pool"])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_compiles_for_h200(h200_builds, pool, dtype):
    rows = [r for r in h200_builds if r["pool"] == pool and r["dtype"] == dtype]
    assert len(rows) >= 2, "every autotune config is compiled"
    for r in rows:
        assert r["ok"], f"{r['config']}: {r.get('error')}"
        assert r["shared"] <= 227 * 1024, f"{r['config']} needs {r['shared']} B of shared memory"
        if dtype != "fp32":
            assert r["wgmma"], f"{r['config']}: no Hopper tensor-core MMA (wgmma) in the PTX"


# ---------------------------------------------------------------------------- GPU numerics
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("n, hw, name", [(1, (14, 14), "4a"), (3, (7, 7), "5b"),
                                         (32, (28, 28), "3a"), (2, (5, 2), "4e")])
def test_gpu_inception_configs(dtype, layout, n, hw, name):
    torch.backends.cudnn.allow_tf32 = dtype != torch.float32
    try:
        cin, c1, c3r, _, c5r, _, cp = INCEPTION_CONFIGS[name]
        run_case(n, cin, hw, (c1, c3r, c5r), cp, dtype, layout, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = True


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, cin, hw, channels, cp", [
    (1, 1, (1, 1), (1, 1, 1), 1), (3, 17, (2, 5), (3, 17, 1), 5), (256, 130, (7, 7), (130, 3, 17), 17)])
def test_gpu_odd_shapes(dtype, n, cin, hw, channels, cp):
    for layout in ("nchw", "channels_last"):
        run_case(n, cin, hw, channels, cp, dtype, layout, "cuda")
