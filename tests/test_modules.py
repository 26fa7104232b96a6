"""FusedInception, FusedGoogLeNet and fuse(): drop-in behaviour, numerics, training, compile."""
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from googlenet_fused import (INCEPTION_CONFIGS, FusedGoogLeNet, FusedInception,
                             FusedLocalResponseNorm, FusedMaxPool2d, GoogLeNet, Inception, fuse)
from googlenet_fused import backends
from helpers import assert_matches, fp32_precision, plain_lowp

CPU_BACKENDS = ["native", "reference"] + (["triton"] if backends.TRITON_ERROR is None else [])
ODD_CONFIGS = [(3, 1, 2, 5, 1, 3, 2), (17, 7, 3, 4, 1, 1, 1), (1, 1, 1, 1, 1, 1, 1)]


def pair(config, backend, dtype=torch.float32):
    ref = Inception(*config).to(dtype).eval()
    fused = FusedInception(*config, backend=backend).to(dtype).eval()
    fused.load_state_dict(ref.state_dict(), strict=True)
    return ref, fused


def spatial(backend, name):
    return 3 if backend == "triton" else 7  # the interpreter is slow: small problems


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", list(INCEPTION_CONFIGS))
def test_nine_configs_match_reference(backend, name):
    ref, fused = pair(INCEPTION_CONFIGS[name], backend)
    s = spatial(backend, name)
    x = torch.randn(2, INCEPTION_CONFIGS[name].in_size, s, s)
    with torch.no_grad():
        assert_matches(fused(x), ref.double()(x.double()), what=f"{name} {backend}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("config", ODD_CONFIGS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("n, hw", [(1, (1, 1)), (3, (5, 2))])
def test_odd_configs_layouts(backend, config, layout, n, hw):
    ref, fused = pair(config, backend)
    x = torch.randn(n, config[0], *hw)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(n, config[0], hw[0], 2 * hw[1])[..., ::2]
    with torch.no_grad():
        assert_matches(fused(x), ref.double()(x.double()), what=f"{config} {backend} {layout}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_native(dtype):
    ref, fused = pair(INCEPTION_CONFIGS["4a"], "native", dtype)
    x = torch.randn(2, 480, 7, 7).to(dtype)
    ref64 = Inception(*INCEPTION_CONFIGS["4a"]).double()
    ref64.load_state_dict(ref.state_dict())
    with torch.no_grad():
        lowp = ref.float()(x.float()).to(dtype)  # CPU LRN has no fp16 kernel: fp32, rounded
        assert_matches(fused(x), ref64(x.double()), lowp, what=str(dtype))


def test_float64_native():
    ref, fused = pair(INCEPTION_CONFIGS["3a"], "native", torch.float64)
    x = torch.randn(2, 192, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-10, atol=1e-12)


def test_state_dict_round_trips():
    ref = Inception(*INCEPTION_CONFIGS["4a"])
    fused = FusedInception(*INCEPTION_CONFIGS["4a"])
    assert set(fused.state_dict()) == set(ref.state_dict())
    fused.load_state_dict(ref.state_dict(), strict=True)
    ref2 = Inception(*INCEPTION_CONFIGS["4a"])
    ref2.load_state_dict(fused.state_dict(), strict=True)
    net, fnet = GoogLeNet((3, 64, 64)), FusedGoogLeNet((3, 64, 64))
    assert list(net.state_dict()) == list(fnet.state_dict())
    fnet.load_state_dict(net.state_dict(), strict=True)
    net.load_state_dict(fnet.state_dict(), strict=True)


def test_from_module_shares_parameters():
    ref = Inception(*ODD_CONFIGS[0])
    fused = FusedInception.from_module(ref, backend="native")
    assert fused.case2[3].weight is ref.case2[3].weight
    with torch.no_grad():
        ref.case1[0].weight.mul_(2)  # seen through the shared parameter, cache invalidated
        x = torch.randn(2, 3, 4, 4)
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-6)


def test_weight_cache_invalidated():
    ref, fused = pair(INCEPTION_CONFIGS["3a"], "native")
    x = torch.randn(1, 192, 4, 4)
    with torch.no_grad():
        fused(x)
        params = fused.op_params()
        assert params[2].is_contiguous(memory_format=torch.channels_last)  # 3×3, as read
        assert all(p is q for p, q in zip(params, fused.op_params()))  # cached
        assert params[2].data_ptr() != ref.case2[3].weight.data_ptr()
        other = Inception(*INCEPTION_CONFIGS["3a"])
        fused.load_state_dict(other.state_dict())
        torch.testing.assert_close(fused(x), other.eval()(x), rtol=1e-5, atol=1e-6)
        fused.double()
        torch.testing.assert_close(fused(x.double()), other.double()(x.double()))


def test_fuse_nested_model(caplog):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Identity(), GoogLeNet((3, 64, 64)))
            self.extra = Inception(*ODD_CONFIGS[0])

    model = Wrapper().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.body(x)
    with caplog.at_level(logging.INFO, logger="googlenet_fused"):
        assert fuse(model, backend="native") is model
    assert ("replaced 10 module(s) by FusedInception, 2 module(s) by FusedLocalResponseNorm, "
            "4 module(s) by FusedMaxPool2d (backend='native')") in caplog.text
    assert sum(isinstance(m, FusedInception) for m in model.modules()) == 10
    assert not any(type(m) is Inception for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model.body(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_output_has_the_input_memory_format(backend, layout):
    ref, fused = pair(ODD_CONFIGS[1], backend)
    x = torch.randn(2, 17, 4, 6)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(2, 17, 4, 12)[..., ::2]
    with torch.no_grad():
        out, expected = fused(x), ref(x)
    cl = layout == "channels_last"
    assert out.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    if not cl:
        out.view(2, -1)  # what NCHW code does with an output
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


class AlexNetStyle(nn.Module):
    """LRN on signed input (before the ReLU), one after it, and one not on 4-D input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 9, 3)
        self.norm1 = nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=1.0)
        self.act = nn.ReLU()
        self.norm2 = nn.LocalResponseNorm(3, alpha=0.5, beta=0.6, k=2.0)
        self.norm3d = nn.LocalResponseNorm(2)

    def forward(self, x):
        y = self.norm2(self.act(self.norm1(self.conv(x))))
        return y, self.norm3d(y.flatten(2))


def test_fuse_any_lrn_exactly():
    model = AlexNetStyle()
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    expected = model.double()(x)
    assert (model.norm1(model.conv(x)) < 0).any()  # signed input really reaches norm1
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fuse(model)
    assert all(type(m) is FusedLocalResponseNorm for m in (model.norm1, model.norm2, model.norm3d))
    assert (model.norm2.size, model.norm2.alpha, model.norm2.beta, model.norm2.k) == (3, 0.5, 0.6, 2.0)
    got = model(x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(sum(g.square().sum() for g in got), [x, model.conv.weight])
    model_ref = AlexNetStyle().double()
    model_ref.load_state_dict(state)
    expected = model_ref(x)
    grads_ref = torch.autograd.grad(sum(e.square().sum() for e in expected),
                                    [x, model_ref.conv.weight])
    for g, e in zip(grads, grads_ref):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)
    assert model.state_dict().keys() == state.keys()
    # the extension's op ran (its autograd node), not ATen's LRN
    assert "googlenet_fused" in type(model.norm1(model.conv(x)).grad_fn).__name__


class Pools(nn.Module):
    """GoogLeNet's stride-2 pools, one followed by an in-place ReLU, and pools fuse leaves."""

    def __init__(self):
        super().__init__()
        self.ceil = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.padded = nn.MaxPool2d(3, stride=2, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.other = nn.MaxPool2d(2)
        self.indices = nn.MaxPool2d(3, stride=1, padding=1, return_indices=True)

    def forward(self, x):
        y = self.relu(self.padded(self.ceil(x)))
        return self.other(y), self.indices(y)[0]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fuse_max_pools_exactly(layout):
    """fuse swaps the 3×3 pools for FusedMaxPool2d (values, ties, NaN and gradients as ATen's,
    an in-place ReLU after one still differentiable) and leaves the others."""
    model = Pools()
    x = torch.randint(-3, 4, (2, 5, 13, 12)).double()
    x[0, 0, 4, 4] = float("nan")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = model(x)
    grad_ref, = torch.autograd.grad(sum(e.nan_to_num(0).sum() for e in expected), x)
    fuse(model)
    assert type(model.ceil) is type(model.padded) is FusedMaxPool2d
    assert type(model.other) is type(model.indices) is nn.MaxPool2d
    assert (model.ceil.kernel_size, model.ceil.stride, model.ceil.ceil_mode) == (3, 2, True)
    got = model(x)
    assert "googlenet_fused" in type(model.ceil(x).grad_fn).__name__
    for g, e in zip(got, expected):
        assert torch.equal(g.nan_to_num(7.5), e.nan_to_num(7.5))
    grad, = torch.autograd.grad(sum(g.nan_to_num(0).sum() for g in got), x)
    assert torch.equal(grad, grad_ref)


def test_fuse_plain_googlenet_is_fused_googlenet():
    net = GoogLeNet((3, 64, 64), n_classes=5).eval()
    keys = list(net.state_dict())
    params = {id(p) for p in net.parameters()}
    fnet = FusedGoogLeNet((3, 64, 64), n_classes=5, backend="native").eval()
    fnet.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = net(x)
        fuse(net, backend="native")
        fuse(net, backend="native")  # twice: nothing more happens
        got = net(x)
    assert list(net.state_dict()) == keys and {id(p) for p in net.parameters()} == params
    assert len(net._forward_pre_hooks) == 1
    assert ([type(m).__name__ for m in net.modules()][1:]
            == [type(m).__name__ for m in fnet.modules()][1:])  # all but the top are the same
    assert [getattr(m, "inplace", None) for m in net.modules()] == [
        getattr(m, "inplace", None) for m in fnet.modules()]
    assert [type(m).__name__ for m in net.prev[:3]] == ["FusedStemConv", "Identity", "Identity"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(fnet(x), got, rtol=0, atol=0)
    seen = []
    net.inception_modules()["3a"].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        net(x)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)  # one conversion at the entry


def test_network_errors_name_the_users_input(monkeypatch):
    monkeypatch.setattr(backends, "_INTERPRET", False)
    net = FusedGoogLeNet((3, 64, 64), backend="triton")
    with pytest.raises(RuntimeError, match=r"cannot run an input of shape \(2, 3, 64, 64\)"):
        net(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_fused_googlenet_matches(backend):
    net = GoogLeNet((3, 96, 96), n_classes=20).eval()
    fnet = FusedGoogLeNet((3, 96, 96), n_classes=20, backend=backend).eval()
    fnet.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert_matches(fnet(x), net.double()(x.double()), what=backend)


@pytest.mark.skipif("triton" not in CPU_BACKENDS, reason="needs triton (interpreter)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("stem_index, lrn", [(4, False), (6, True)])
def test_stem_conv_one_launch_and_autograd_path(stem_index, lrn, dtype, monkeypatch):
    """The stem's 1×1 (+ ReLU) and 3×3 (+ ReLU + LRN) as one Triton launch when no gradient is
    needed, ATen's convolution, ReLU and LRN otherwise: same values, gradients through the
    second."""
    from googlenet_fused import modules, stem_op

    net = GoogLeNet((3, 64, 64)).to(dtype)
    conv, fused_net = net.prev[stem_index], FusedGoogLeNet((3, 64, 64), backend="triton")
    fused_net.load_state_dict(net.state_dict())
    fused = fused_net.prev[stem_index]
    assert isinstance(fused, modules.FusedStemConv) and (fused.lrn is not None) == lrn
    fused.to(dtype)
    tail = net.prev[stem_index + 1:stem_index + (3 if lrn else 2)]
    x = torch.randn(2, conv.in_channels, 6, 7, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    launches = []
    monkeypatch.setattr(modules, "stem_conv_triton",
                        lambda *a: launches.append(a) or stem_op.stem_conv_triton(*a))
    with torch.no_grad():
        got = fused(x)
    assert len(launches) == 1
    lowp = None
    if dtype != torch.float32:
        lowp = plain_lowp(lambda ts: tail(F.conv2d(ts[0], ts[1], ts[2], padding=conv.padding)),
                          [x, conv.weight.detach(), conv.bias.detach()])
    ref = tail.double()(F.conv2d(x.double(), conv.weight.double(), conv.bias.double(),
                                 padding=conv.padding))
    assert_matches(got, ref, lowp, what=f"stem conv {stem_index} {dtype}")
    xg = x.float().requires_grad_()
    fused.float()
    out = fused(xg)  # needs gradients: ATen's path
    assert len(launches) == 1
    out.sum().backward()
    assert xg.grad is not None and fused.weight.grad is not None


def test_bad_input_errors():
    fused = FusedInception(*INCEPTION_CONFIGS["4a"], backend="native")
    with pytest.raises(ValueError, match=r"\[N, 480, H, W\].*\(1, 48, 7, 7\)"):
        fused(torch.randn(1, 48, 7, 7))
    with pytest.raises(ValueError, match="4-D"):
        fused(torch.randn(480, 7, 7))
    with pytest.raises(TypeError, match="floating-point"):
        fused(torch.ones(1, 480, 7, 7, dtype=torch.int64))
    with pytest.raises(TypeError, match="float64"):
        fused(torch.randn(1, 480, 7, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend must be one of"):
        FusedInception(*INCEPTION_CONFIGS["4a"], backend="cuda")
    with pytest.raises(ValueError, match="on meta but the module's parameters are on cpu"):
        fused(torch.randn(1, 480, 7, 7, device="meta"))


def test_unsupported_backend_lists_reasons(monkeypatch):
    monkeypatch.setattr(backends, "_INTERPRET", False)
    fused = FusedInception(*ODD_CONFIGS[0], backend="triton")
    with pytest.raises(RuntimeError, match=r"backend 'triton' cannot run.*need CUDA tensors"):
        fused(torch.randn(1, 3, 4, 4))
    monkeypatch.setattr(backends.ops, "EXTENSION_ERROR", "ImportError: gone")
    assert backends.select("auto", torch.randn(1, 3, 4, 4)) == "reference"
    with pytest.raises(RuntimeError, match="extension is not built"):
        backends.select("native", torch.randn(1, 3, 4, 4))


def test_nan_and_inf_propagate():
    ref, fused = pair(ODD_CONFIGS[1], "native")
    x = torch.randn(2, 17, 5, 5)
    x[0, 3, 2, 2] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    with torch.no_grad():
        got, expected = fused(x), ref(x)
    assert torch.equal(torch.isnan(got), torch.isnan(expected)) and torch.isnan(got).any()


def _grads(module, x):
    x = x.clone().requires_grad_()
    module.zero_grad()
    (module(x) * torch.linspace(-1, 1, module(x).numel()).view_as(module(x)).to(x.dtype)
     ).sum().backward()
    return [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_match_reference(backend):
    config = ODD_CONFIGS[1]
    dtype = torch.float32 if backend == "triton" else torch.float64
    ref, fused = pair(config, backend, dtype)
    x = torch.randn(2, config[0], 4, 3, dtype=dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    for g_fused, g_ref in zip(_grads(fused, x), _grads(ref, x)):
        torch.testing.assert_close(g_fused, g_ref, **tol)


class _LrnInFloat(nn.Module):
    """An LRN computed in fp32 and rounded to its input's dtype: ATen's CPU LRN has no fp16 /
    bf16 kernel, everything else of plain low-precision PyTorch does."""

    def __init__(self, lrn):
        super().__init__()
        self.lrn = lrn

    def forward(self, x):
        return self.lrn(x.float()).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_native_gradients(dtype):
    """Training in fp16 / bf16 on CPU: the input's and every parameter's gradient against the
    float64 reference's, no worse than plain PyTorch's in that dtype (its convolutions and
    ReLUs in the dtype, its LRN through fp32). The merged 1×1s' gradients are GEMMs in it."""
    torch.manual_seed(0)
    ref, fused = pair(INCEPTION_CONFIGS["4a"], "native", dtype)
    ref64 = Inception(*INCEPTION_CONFIGS["4a"]).double()
    ref64.load_state_dict(ref.state_dict())
    for branch in (ref.case1, ref.case2, ref.case3, ref.case4):
        for i, layer in enumerate(branch):
            if isinstance(layer, nn.LocalResponseNorm):
                branch[i] = _LrnInFloat(layer)
    x = torch.randn(2, 480, 7, 7).to(dtype)
    names = ["x"] + [name for name, _ in fused.named_parameters()]
    for name, got, g64, lowp in zip(names, _grads(fused, x), _grads(ref64, x.double()),
                                    _grads(ref, x)):
        assert_matches(got, g64, lowp, what=f"{dtype} gradient of {name}")


@pytest.mark.parametrize("fold", [False, True])
def test_stem_relu_after_pool_is_exact(fold, monkeypatch):
    """fuse takes a convolution's ReLU and max pool into it and moves the ReLU (and, folding,
    the bias) behind the pool: same values and gradients, even with ties, NaN and windows whose
    maximum is not positive. The convolution is an identity (integers stay integers, ties
    stay ties)."""
    from googlenet_fused.modules import FusedStemConv, _fuse_stem

    def stem():
        conv = nn.Conv2d(3, 3, 1).double()
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3)[:, :, None, None])
            conv.bias.fill_(-1.0)
        return nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True))

    ref, fused = stem(), stem()
    _fuse_stem(fused, "native")
    assert [type(m) for m in fused] == [FusedStemConv, nn.Identity, nn.Identity]
    monkeypatch.setattr(backends, "fold_bias", lambda x: fold)
    x = torch.randint(-3, 4, (2, 3, 9, 8), dtype=torch.float64)  # many ties, many <= 0
    x[0, 0, 2, 2] = float("nan")
    grad = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    results = []
    for model in (ref, fused):
        xr = x.clone().requires_grad_()
        out = model(xr)
        results.append((out, *torch.autograd.grad(out, (xr, model[0].weight, model[0].bias),
                                                  grad)))
    # values and the routing exact; the parameter gradients summed in another order
    torch.testing.assert_close(results[1][:2], results[0][:2], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(results[1][2:], results[0][2:], rtol=1e-12, atol=1e-12,
                               equal_nan=True)


@pytest.mark.parametrize("fold", [False, True])
def test_stem_conv_with_its_pool(fold, monkeypatch):
    """The 7×7 with its max pool and ReLU: the bias after the pool where backends.fold_bias says
    so (CUDA; forced here), before it otherwise; values and float64 gradients as the reference's
    conv -> ReLU -> pool."""
    from googlenet_fused import modules

    net = GoogLeNet((3, 64, 64)).double()
    fused = FusedGoogLeNet((3, 64, 64), backend="native").double()
    fused.load_state_dict(net.state_dict())
    stem = fused.prev[0]
    assert isinstance(stem, modules.FusedStemConv) and stem.pool is not None
    monkeypatch.setattr(backends, "fold_bias", lambda x: fold)
    x = torch.randn(2, 3, 31, 30, dtype=torch.float64).requires_grad_()
    got, expected = stem(x), net.prev[:3](x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(got)
    mine = torch.autograd.grad(got, (x, stem.weight, stem.bias), grad)
    theirs = torch.autograd.grad(expected, (x, net.prev[0].weight, net.prev[0].bias), grad)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_fused_googlenet_gradients_match():
    # eval(): no dropout, so both see the same function; autograd works the same.
    net = GoogLeNet((3, 64, 64), n_classes=7).double().eval()
    fnet = FusedGoogLeNet((3, 64, 64), n_classes=7, backend="native").double().eval()
    fnet.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for g_fused, g_ref in zip(_grads(fnet, x), _grads(net, x)):
        torch.testing.assert_close(g_fused, g_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", ["native"] + (["triton"] if "triton" in CPU_BACKENDS else []))
def test_large_biases_outside_the_convolutions(backend, monkeypatch):
    # native: the CUDA policy (convolutions without bias, the LRN op adds it), run here on CPU;
    # triton: the biases are added in the GEMMs' epilogue.
    if backend == "native":
        monkeypatch.setattr(backends, "fold_bias", lambda x: True)
    config = ODD_CONFIGS[1]
    dtype = torch.float32 if backend == "triton" else torch.float64
    ref, fused = pair(config, backend, dtype)
    for conv in ref.modules():  # large biases, so that a lost one shows
        if isinstance(conv, nn.Conv2d):
            nn.init.uniform_(conv.bias, -1, 1)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, config[0], 4, 3, dtype=dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    for g_fused, g_ref in zip(_grads(fused, x), _grads(ref, x)):
        torch.testing.assert_close(g_fused, g_ref, **tol)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), **tol)


@pytest.mark.parametrize("backend", ["native"] + (["triton"] if "triton" in CPU_BACKENDS else []))
def test_sgd_steps_stay_together(backend):
    config = ODD_CONFIGS[0]
    ref = Inception(*config)
    fused = FusedInception(*config, backend=backend)
    fused.load_state_dict(ref.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ref, fused)]
    for _ in range(4):
        x = torch.randn(4, config[0], 5, 5)
        target = torch.randn(4, ref.config.out_channels, 5, 5)
        for m, opt in zip((ref, fused), opts):
            opt.zero_grad()
            ((m(x) - target) ** 2).mean().backward()
            opt.step()
    for p, q in zip(ref.parameters(), fused.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # and the inference cache sees the updated weights
        x = torch.randn(2, config[0], 5, 5)
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-4, atol=1e-5)


def _op_params(ref, dtype=torch.float32):
    with torch.no_grad():
        params = FusedInception.from_module(ref, "native").op_params()
    return [t.detach().to(dtype) for t in params]


@pytest.mark.parametrize("backend", ["native"] + (["triton"] if "triton" in CPU_BACKENDS else []))
def test_op_returns_preactivations_and_opchecks(backend):
    """Both backends' ops follow one data flow: training=True returns each step's conv + bias
    (what the backward differentiates LRN at) and the reductions (native: also the pooled x and
    its taps), so the shared backward recomputes no convolution; training=False returns none of
    it and refuses a backward."""
    from googlenet_fused import inception_op

    op = getattr(inception_op, f"inception_{backend}")
    ref = Inception(*ODD_CONFIGS[1])
    params = _op_params(ref)
    x = torch.randn(2, ODD_CONFIGS[1][0], 4, 3).contiguous(memory_format=torch.channels_last)
    out, u_red, u_pool, u3, u5, red3, red5, pooled, taps = op(x, *params, True)
    with torch.no_grad():
        torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(u_red, F.conv2d(x, params[0], params[1]), rtol=1e-5,
                                   atol=1e-6)
        torch.testing.assert_close(u_pool, F.conv2d(F.max_pool2d(x, 3, 1, 1), params[6],
                                                    params[7]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(u3, F.conv2d(red3, params[2], params[3], padding=1),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(u5, F.conv2d(red5, params[4], params[5], padding=2),
                                   rtol=1e-5, atol=1e-6)
        if backend == "native":
            torch.testing.assert_close(pooled, F.max_pool2d(x, 3, 1, 1))
            assert taps.dtype == torch.uint8 and torch.equal(
                taps, torch.ops.googlenet_fused.max_pool3x3_with_taps(x)[1])
        else:  # pooled in registers: the backward pools again
            assert pooled.numel() == 0 and taps.numel() == 0
    inference = op(x, *params, False)
    assert all(inference[i].numel() == 0 for i in (1, 2, 3, 4, 7, 8))
    xg = x.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="training=False"):
        op(xg, *params)[0].sum().backward()
    for training in (True, False):
        torch.library.opcheck(op, (x, *params, training),
                              test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(op, (xg, *params, True))
    # An NCHW output (what FusedInception asks of the native CPU backend for NCHW input): the
    # same values (to rounding: a one-channel branch's LRN runs planar there, with exact
    # d^-3/4, and channels_last here, estimated), and the fake kernel promises its strides.
    nchw = op(x, *params, True, True, True)[0]
    assert nchw.is_contiguous()
    torch.testing.assert_close(nchw, out)
    torch.library.opcheck(op, (xg, *params, True, True, True))


@pytest.mark.parametrize("input_grad", [True, False])
def test_native_op_gradcheck(input_grad):
    """The shared backward in float64 against finite differences, every input at once; told
    that x's gradient is not needed, the forward keeps no pool taps and the backward, asked for
    it anyway, pools again."""
    from googlenet_fused.inception_op import inception_native

    torch.manual_seed(0)
    ref = Inception(5, 3, 2, 3, 1, 2, 2)
    params = [p.requires_grad_() for p in _op_params(ref, torch.float64)]
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    assert (inception_native(x, *params, True, input_grad)[8].numel() > 0) == input_grad
    torch.autograd.gradcheck(lambda *a: inception_native(*a, True, input_grad)[0], (x, *params))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native"] + (["triton"] if "triton" in CPU_BACKENDS else []))
def test_compile_fullgraph_and_backward(backend):
    config = ODD_CONFIGS[0]
    ref, fused = pair(config, backend)
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True)
    x = torch.randn(2, config[0], 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x), rtol=1e-5, atol=1e-6)
    fused.train()
    xg = x.clone().requires_grad_()
    compiled(xg).sum().backward()
    xr = x.clone().requires_grad_()
    ref.train()(xr).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compile_whole_network_native():
    net = GoogLeNet((3, 64, 64)).eval()
    fnet = FusedGoogLeNet((3, 64, 64), backend="native").eval()
    fnet.load_state_dict(net.state_dict())
    torch._dynamo.reset()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(fnet, fullgraph=True)(x), net(x),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native"] + (["triton"] if "triton" in CPU_BACKENDS else []))
def test_export(backend):
    ref, fused = pair(ODD_CONFIGS[0], backend)
    x = torch.randn(2, 3, 5, 5)
    exported = torch.export.export(fused, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any("googlenet_fused" in t for t in targets), targets
    torch.testing.assert_close(exported.module()(x), ref(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "native"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, n", [("3a", 1), ("4a", 32), ("5b", 7)])
def test_gpu_modules(backend, dtype, name, n):
    cfg = INCEPTION_CONFIGS[name]
    ref, fused = pair(cfg, backend, dtype)
    ref.cuda(), fused.cuda()
    ref64 = Inception(*cfg).double().cuda()
    ref64.load_state_dict(ref.state_dict())
    s = {"3a": 28, "4a": 14, "5b": 7}[name]
    for layout in ("nchw", "channels_last"):
        x = torch.randn(n, cfg.in_size, s, s, device="cuda").to(dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            lowp = ref(x)  # plain PyTorch in this dtype (fp32 convs use TF32, as cuDNN does)
            if dtype == torch.float32:
                ref_out = ref64(x.double())
                err = (fused(x).double() - ref_out).abs().max()
                base = (lowp.double() - ref_out).abs().max()
                assert err <= 2 * base + 1e-4, (err, base)
                continue
            assert_matches(fused(x), ref64(x.double()), lowp, what=f"{name} {backend} {dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "native"])
def test_gpu_training_and_compile(backend):
    cfg = INCEPTION_CONFIGS["4a"]
    with fp32_precision("ieee"):
        ref, fused = pair(cfg, backend)
        ref.cuda(), fused.cuda()
        x = torch.randn(4, cfg.in_size, 14, 14, device="cuda")
        for g_fused, g_ref in zip(_grads(fused, x), _grads(ref, x)):
            torch.testing.assert_close(g_fused, g_ref, rtol=1e-3, atol=1e-4)
        torch._dynamo.reset()
        with torch.no_grad():
            torch.testing.assert_close(torch.compile(fused.eval(), fullgraph=True)(x), ref(x),
                                       rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "native"])
def test_gpu_network_under_cuda_graphs(backend):
    # Small batches are launch-bound: the whole network replayed as one CUDA graph, after a
    # warm-up that autotunes the Triton kernels and fills the weight caches. (Not also under
    # torch.compile(mode="reduce-overhead") here: compiling the network twice would not fit the
    # GPU check's test budget.)
    net = FusedGoogLeNet((3, 224, 224), n_classes=1000, backend=backend).cuda().half().eval()
    ref64 = GoogLeNet((3, 224, 224), n_classes=1000).cuda().double().eval()
    ref16 = GoogLeNet((3, 224, 224), n_classes=1000).cuda().half().eval()
    ref64.load_state_dict(net.state_dict())
    ref16.load_state_dict(net.state_dict())

    def check(got, x, what):
        assert_matches(got, ref64(x.double()), ref16(x), what=f"{what} {backend}")

    static_x = torch.randn(8, 3, 224, 224, device="cuda").half()
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                net(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = net(static_x)
        for _ in range(2):  # new data through the same graph
            static_x.copy_(torch.randn_like(static_x))
            graph.replay()
            check(static_out, static_x, "CUDA graph")
