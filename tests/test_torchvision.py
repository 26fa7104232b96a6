"""torchvision's GoogLeNet through fuse(): BatchNorm folded for inference, validated against
torchvision's own model (random weights, BatchNorm statistics far from 0 and 1), every block and
the network, both backends (triton in the interpreter), training mode torchvision's."""
import copy

import pytest
import torch
import torch.nn as nn

from googlenet_fused import INCEPTION_CONFIGS, backends, fuse
from googlenet_fused.inception_op import layout_of
from googlenet_fused.torchvision_googlenet import (FusedBasicConv2d, FusedTorchvisionInception,
                                                   fold_batchnorm, is_inception)
from helpers import assert_matches

# the module (torchvision.models.googlenet is also the name of its builder function)
tv_googlenet = pytest.importorskip("torchvision.models.googlenet")

BACKENDS = ["native"] + (["triton"] if backends.TRITON_ERROR is None else [])
ODD_CONFIGS = [(17, 7, 3, 5, 1, 3, 2), (1, 1, 1, 1, 1, 1, 1)]


def randomize(model: nn.Module, seed=0) -> nn.Module:
    """Random convolution weights and BatchNorm statistics / affine parameters well away from
    identity (means ±2, variances 0.1-9, scales of both signs), in place; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(4 * torch.rand(n, generator=gen) - 2)
                m.running_var.copy_(0.1 + 9 * torch.rand(n, generator=gen))
                m.weight.copy_((0.5 + torch.rand(n, generator=gen))
                               * torch.where(torch.rand(n, generator=gen) < 0.2, -1.0, 1.0))
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def network(**kwargs):
    kwargs.setdefault("init_weights", False)
    kwargs.setdefault("aux_logits", False)
    return randomize(tv_googlenet.GoogLeNet(num_classes=10, **kwargs))


def block(config):
    return randomize(tv_googlenet.Inception(*config))


def spatial(backend):
    return 3 if backend == "triton" else 7  # the interpreter is slow: small problems


def check(fused, ref, x, what):
    """fused(x) against ref in float64 (fp32 tight; fp16 / bf16 by plain PyTorch's error)."""
    ref64 = copy.deepcopy(ref).double()
    with torch.no_grad():
        got = fused(x)
        lowp = ref(x) if x.dtype in (torch.float16, torch.bfloat16) else None
        assert_matches(got, ref64(x.double()), lowp, what=what)
    return got


def test_fold_batchnorm_equals_conv_then_eval_batchnorm():
    conv, bn = nn.Conv2d(5, 7, 3, padding=1, bias=True), nn.BatchNorm2d(7, eps=1e-3)
    seq = randomize(nn.Sequential(conv, bn)).double()
    weight, bias = fold_batchnorm(conv, bn)
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(nn.functional.conv2d(x, weight, bias, padding=1), seq(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(INCEPTION_CONFIGS))
def test_nine_blocks_match_torchvision(backend, name):
    ref = block(INCEPTION_CONFIGS[name])
    fused = FusedTorchvisionInception.from_module(copy.deepcopy(ref), backend)
    s = spatial(backend)
    check(fused, ref, torch.randn(2, INCEPTION_CONFIGS[name].in_size, s, s), f"{name} {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", ODD_CONFIGS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("n, hw", [(1, (1, 1)), (3, (5, 2))])
def test_odd_blocks_layouts(backend, config, layout, n, hw):
    ref = block(config)
    fused = FusedTorchvisionInception.from_module(copy.deepcopy(ref), backend)
    x = torch.randn(n, config[0], *hw)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(n, config[0], hw[0], 2 * hw[1])[..., ::2]
    got = check(fused, ref, x, f"{config} {backend} {layout}")
    assert got.is_contiguous(memory_format=layout_of(x))  # the input's memory format


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_block_native(dtype):
    ref = block(INCEPTION_CONFIGS["4b"]).to(dtype)
    fused = FusedTorchvisionInception.from_module(copy.deepcopy(ref), "native")
    check(fused, ref, torch.randn(2, 512, 7, 7).to(dtype), f"4b {dtype}")


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("transform_input", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_network_matches_torchvision(backend, transform_input, layout):
    ref = network(transform_input=transform_input)
    model = fuse(copy.deepcopy(ref), backend)
    x = torch.randn(2, 3, 67, 75)  # odd sizes: every ceil-mode pool rounds up
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    check(model, ref, x, f"network {backend} transform_input={transform_input} {layout}")


@pytest.mark.skipif("triton" not in BACKENDS, reason="needs triton (interpreter)")
def test_network_triton_one_launch_per_stem_conv(monkeypatch):
    from googlenet_fused import torchvision_googlenet, stem_op

    ref = network(transform_input=True)
    model = fuse(copy.deepcopy(ref), "triton")
    launches = []
    monkeypatch.setattr(torchvision_googlenet, "stem_conv_triton",
                        lambda *a: launches.append(a[1].shape) or stem_op.stem_conv_triton(*a))
    check(model, ref, torch.randn(1, 3, 32, 33), "network triton")
    assert launches == [(64, 64, 1, 1), (192, 64, 3, 3)]  # conv2 and conv3; conv1 is 7×7 / 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_network_low_precision_native(dtype):
    ref = network().to(dtype)
    check(fuse(copy.deepcopy(ref), "native"), ref, torch.randn(1, 3, 64, 64).to(dtype),
          f"network {dtype}")


def test_fuse_keeps_state_dict_and_parameters_and_training_is_torchvisions():
    ref = network(aux_logits=True)
    model = copy.deepcopy(ref)
    keys, params = list(model.state_dict()), {id(p) for p in model.parameters()}
    fuse(model, "native")
    fuse(model, "native")  # twice: nothing more happens
    assert list(model.state_dict()) == keys and {id(p) for p in model.parameters()} == params
    assert len(model._forward_pre_hooks) == 1
    names = {n: type(m).__name__ for n, m in model.named_children()}
    assert names["inception3a"] == "FusedTorchvisionInception"
    assert names["conv1"] == "FusedBasicConv2d" and model.conv1.channels_last
    assert names["maxpool1"] == "FusedMaxPool2d" and names["maxpool4"] == "MaxPool2d"  # 2×2
    assert type(model.inception3a.branch2[1]).__name__ == "BasicConv2d"  # torchvision's, kept
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    # Training mode: torchvision's forward (aux outputs, batch statistics, dropout), in float64
    # (the fused model computes channels_last: other fp32 roundings through 60 layers)
    model.double().train(), ref.double().train()
    for _ in range(2):  # the running statistics move, in both, the same way
        torch.manual_seed(5)
        got = model(x)
        torch.manual_seed(5)
        expected = ref(x)
        assert type(got).__name__ == "GoogLeNetOutputs"
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    # Back in eval mode, the fused path folds the statistics training left behind.
    model.float().eval(), ref.float().eval()
    check(model, ref, x.float(), "after training")


def test_folded_weights_never_stale():
    ref = block(INCEPTION_CONFIGS["4a"])
    fused = FusedTorchvisionInception.from_module(copy.deepcopy(ref), "native")
    x = torch.randn(1, 480, 5, 5)
    check(fused, ref, x, "first")
    changes = [  # in place, as optimizers and nn.init do (not through .data, which no
        # version counter sees)
        lambda m: m.branch2[1].bn.running_var.mul_(3),
        lambda m: m.branch4[1].bn.weight.neg_(),
        lambda m: m.branch3[0].conv.weight.mul_(0.5),
        lambda m: setattr(m.branch1.bn, "eps", 0.5),
    ]
    for i, change in enumerate(changes):
        with torch.no_grad():
            change(ref), change(fused)
        check(fused, ref, x, f"change {i}")
    fused = FusedTorchvisionInception.from_module(block(INCEPTION_CONFIGS["4a"]), "native")
    with torch.no_grad():
        fused(x)  # its cache filled
    other = randomize(block(INCEPTION_CONFIGS["4a"]), seed=3)
    fused.load_state_dict(other.state_dict())  # load_state_dict after fuse takes effect
    check(fused, other, x, "loaded")
    check(fused.double(), other.double(), x.double(), ".to(float64)")


def test_eval_with_gradients_runs_torchvisions_arithmetic():
    ref = block(INCEPTION_CONFIGS["5a"])
    fused = FusedTorchvisionInception.from_module(copy.deepcopy(ref), "native")
    x = torch.randn(2, 832, 3, 3)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(xr).square().sum().backward()
    fused(xf).square().sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad)
    for (name, p), q in zip(fused.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{name}: {m}")


def test_basic_conv_alone():
    conv = randomize(tv_googlenet.BasicConv2d(6, 5, kernel_size=3, stride=2, padding=1))
    fused = FusedBasicConv2d.from_module(copy.deepcopy(conv), "native")
    x = torch.randn(2, 6, 9, 8)
    assert check(fused, conv, x, "BasicConv2d").is_contiguous()  # NCHW in, NCHW out


@pytest.mark.slow
def test_compile_fullgraph_network():
    ref = network()
    model = fuse(copy.deepcopy(ref), "native")
    torch._dynamo.reset()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), ref(x),
                                   rtol=1e-4, atol=1e-5)


def test_recognition_and_errors():
    inception = block(ODD_CONFIGS[0])
    assert is_inception(inception) and not is_inception(nn.Sequential())
    with pytest.raises(TypeError, match="FusedTorchvisionInception.from_module"):
        fuse(inception)
    with pytest.raises(TypeError, match="expects a torchvision GoogLeNet Inception block"):
        FusedTorchvisionInception.from_module(nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="expects torchvision's BasicConv2d"):
        FusedBasicConv2d.from_module(nn.Conv2d(1, 1, 1))
    changed = block(ODD_CONFIGS[0])
    changed.branch2[1].conv.stride = (2, 2)  # not the layout the kernels compute: left alone
    assert not is_inception(changed)
    fused = FusedTorchvisionInception.from_module(block(INCEPTION_CONFIGS["3a"]), "native")
    with pytest.raises(ValueError,
                       match=r"expected 192 input channels .* got shape \(2, 5, 4, 4\)"):
        fused(torch.randn(2, 5, 4, 4))
