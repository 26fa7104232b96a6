"""Each fused op against the PyTorch ops it replaces.

- lrn_relu_concat (extension): inception-4a branch shapes, batch 16, vs F.local_response_norm +
  relu per branch + torch.cat. CPU here; CUDA too when present.
- lrn_relu_concat_backward (extension): the same shapes, vs the ATen formula of lrn.py per branch.
- max_pool3x3 (extension, CPU only): the pool branch's pooling of 4a's input at batch 16, vs
  F.max_pool2d(x, 3, 1, 1); and, forward + backward, the stem's first pool (stride 2, ceil_mode)
  at batch 8, channels_last, as FusedMaxPool2d runs it in training (one-byte taps) vs ATen's.
- Triton kernels (GPU only): merged 1×1 reductions (three 1×1 convs + three LRN + three ReLU) and
  the pool projection (max pool + conv + LRN + ReLU), for 3a, 4a, 5b at batch 1, 32, 256.
"""
import pytest
import torch
import torch.nn.functional as F

from conftest import ALL_DTYPES, DEVICE, DTYPES, ON_GPU, run_benchmark
from googlenet_fused import backends, ops, prepacked
from googlenet_fused.lrn import lrn_relu_backward
from googlenet_fused.reference import INCEPTION_CONFIGS, SPATIAL_AT_224

LRN = (5, 1e-3, 0.75, 2.0)


def lrn_relu(u):
    return F.relu(F.local_response_norm(u, *LRN))


def branches_4a(layout):
    """The four branch outputs of inception 4a at batch 16 (before their LRN), in ``layout``."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return [torch.randn(16, c, 14, 14, device=DEVICE).contiguous(memory_format=fmt)
            for c in (192, 208, 48, 64)]


@pytest.mark.skipif(not ops.extension_available(), reason="extension not built")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("provider", ["eager", "fused-extension"])
def test_lrn_relu_concat(benchmark, provider, layout):
    branches = branches_4a(layout)
    if provider == "fused-extension":
        def fn():
            return ops.lrn_relu_concat(branches, *LRN)
    else:
        def fn():
            return torch.cat([lrn_relu(b) for b in branches], 1)
    benchmark.group = f"lrn_relu_concat 4a branches batch 16 {layout}"
    run_benchmark(benchmark, fn, dict(module="4a-lrn", provider=provider, batch=16, dtype="fp32",
                                      layout=layout))


@pytest.mark.skipif(not ops.extension_available(), reason="extension not built")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("provider", ["eager", "fused-extension"])
def test_lrn_relu_concat_backward(benchmark, provider, layout):
    branches = branches_4a(layout)
    out = ops.lrn_relu_concat(branches, *LRN)
    grad = torch.randn_like(out)
    if provider == "fused-extension":
        def fn():
            return torch.ops.googlenet_fused.lrn_relu_concat_backward(grad, branches, *LRN, True)
    else:
        def fn():
            grads, offset = [], 0
            for b in branches:
                c = b.shape[1]
                grads.append(lrn_relu_backward(grad.narrow(1, offset, c), b,
                                               out.narrow(1, offset, c), *LRN))
                offset += c
            return grads
    benchmark.group = f"lrn_relu_concat_backward 4a branches batch 16 {layout}"
    run_benchmark(benchmark, fn, dict(module="4a-lrn-backward", provider=provider, batch=16,
                                      dtype="fp32", layout=layout))


@pytest.mark.skipif(not ops.extension_available() or ON_GPU,
                    reason="the extension's max pool is CPU-only (CUDA uses cuDNN's)")
@pytest.mark.parametrize("provider", ["eager", "fused-extension"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_max_pool3x3(benchmark, provider, layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(16, 480, 14, 14).contiguous(memory_format=fmt)
    pool = ops.max_pool3x3 if provider == "fused-extension" else (
        lambda t: F.max_pool2d(t, 3, 1, 1))
    benchmark.group = f"max_pool3x3 4a input batch 16 {layout}"
    run_benchmark(benchmark, lambda: pool(x), dict(module="4a-pool", provider=provider, batch=16,
                                                   dtype="fp32", layout=layout))


@pytest.mark.skipif(not ops.extension_available() or ON_GPU,
                    reason="the extension's max pool is CPU-only (CUDA uses cuDNN's)")
@pytest.mark.parametrize("provider", ["eager", "fused-extension"])
def test_max_pool3x3_training(benchmark, provider):
    x = torch.randn(8, 64, 112, 112).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(8, 64, 56, 56).contiguous(memory_format=torch.channels_last)
    pool = (lambda t: ops.max_pool3x3(t, 2, 0, True)) if provider == "fused-extension" else (
        lambda t: F.max_pool2d(t, 3, 2, 0, ceil_mode=True))

    def step():  # a fresh input gradient each time, as in a training step
        x.grad = None
        with torch.enable_grad():
            pool(x).backward(grad)

    benchmark.group = "max pool 3x3 stride 2 forward + backward, stem, batch 8 channels_last"
    run_benchmark(benchmark, step, dict(module="stem-pool-fwd-bwd", provider=provider, batch=8,
                                        dtype="fp32", layout="channels_last"))


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU or backends.TRITON_ERROR is not None, reason="needs a GPU")
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", [1, 32, 256])
@pytest.mark.parametrize("provider", ["eager", "compile", "fused-triton"])
@pytest.mark.parametrize("kernel", ["reductions", "pool", "3x3"])
@pytest.mark.parametrize("module_name", ["3a", "4a", "5b"])
def test_triton_kernel(benchmark, module_name, kernel, provider, batch, dtype):
    """One Triton launch against the ATen ops it replaces, channels_last (the kernels' layout)."""
    from googlenet_fused.kernels.conv_lrn_relu import (conv_lrn_relu, pool_projection,
                                                       reductions_1x1)

    cin, c1, c3r, c3, c5r, _, cp = INCEPTION_CONFIGS[module_name]
    s, dt = SPATIAL_AT_224[module_name], DTYPES[dtype]
    cl = torch.channels_last
    ks, cin = (3, c3r) if kernel == "3x3" else (1, cin)
    chans = {"reductions": (c1, c3r, c5r), "pool": (cp,), "3x3": (c3,)}[kernel]
    x = torch.randn(batch, cin, s, s, device=DEVICE, dtype=dt).contiguous(memory_format=cl)
    w = torch.randn(sum(chans), cin, ks, ks, device=DEVICE, dtype=dt) * (cin * ks * ks) ** -0.5
    b = torch.randn(sum(chans), device=DEVICE, dtype=dt)
    out = torch.empty(batch, chans[0], s, s, device=DEVICE, dtype=dt).contiguous(memory_format=cl)

    def eager():
        if kernel == "pool":
            return lrn_relu(F.conv2d(F.max_pool2d(x, 3, 1, 1), w, b))
        ws, bs = w.split(list(chans)), b.split(list(chans))
        return [lrn_relu(F.conv2d(x, wi, bi, padding=ks // 2)) for wi, bi in zip(ws, bs)]

    if provider == "fused-triton":
        fn = {"pool": lambda: pool_projection(x, w, b, out, LRN),
              "reductions": lambda: reductions_1x1(x, w, b, chans, out, LRN),
              "3x3": lambda: conv_lrn_relu(x, w, b, out, LRN)}[kernel]
    elif provider == "compile":
        torch._dynamo.reset()
        fn = torch.compile(eager)
    else:
        fn = eager
    benchmark.group = f"{kernel} {module_name} batch {batch} {dtype}"
    run_benchmark(benchmark, fn, dict(module=f"{module_name}-{kernel}", provider=provider,
                                      batch=batch, dtype=dtype, layout="channels_last"))


@pytest.mark.parametrize("provider", ["eager", "onednn"])
@pytest.mark.parametrize("dtype", list(DTYPES) if ON_GPU else ["fp32", "bf16"])
def test_gemm_ceiling(benchmark, dtype, provider):
    """The machine's GEMM ceiling (rows "gemm", GFLOP/s; the report states the peers' and our
    results as a share of the faster provider): a 4096 × 4096 × 4096 product as torch.mm
    ("eager") and, on CPU, as a oneDNN 1×1 convolution with a prepacked weight ("onednn": the
    GEMM kernels every CPU peer's convolutions run). torch.mm goes through MKL, which on the AMD
    development machine gave 133 GFLOP/s in fp32 against oneDNN's 188-200."""
    n = 4096
    dt = ALL_DTYPES[dtype]
    benchmark.group = f"GEMM ceiling {n} {dtype}"
    info = dict(module="gemm", provider=provider, batch=n, dtype=dtype, layout="-", macs=n ** 3)
    if provider == "eager":
        a, b = (torch.randn(n, n, device=DEVICE).to(dt) for _ in range(2))
        run_benchmark(benchmark, lambda: torch.mm(a, b), info)
        return
    if ON_GPU or not prepacked.applies(torch.zeros(1, dtype=dt)):
        pytest.skip("oneDNN's GEMM: CPU, with mkldnn and this dtype")
    x = torch.randn(1, n, 64, 64).to(dt).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).to(dt)  # x: 4096 pixel rows × 4096 channels
    packs = prepacked.ConvPacks()
    run_benchmark(benchmark, lambda: packs.conv(x, w, None), info)
