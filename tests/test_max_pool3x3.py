"""The extension's CPU max_pool3x3 (and max_pool3x3_with_taps) against
F.max_pool2d(x, 3, stride, padding, ceil_mode): values must be identical (max is exact), NaN where
PyTorch has NaN, and gradients routed the same way (max_pool3x3_backward_into, from the taps)."""
import pytest
import torch
import torch.nn.functional as F

from googlenet_fused import ops
from helpers import make_inputs

pytestmark = pytest.mark.skipif(not ops.extension_available(),
                                reason=f"extension not built: {ops.EXTENSION_ERROR}")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (stride, padding, ceil_mode): the inception pool branch's, GoogLeNet's two stride-2 kinds, and
# others the kernel takes as ATen does.
POOLINGS = [(1, 1, False), (2, 0, True), (2, 1, False), (1, 0, False), (2, 0, False),
            (3, 1, True)]


def check(x, pooling=(1, 1, False)):
    ref = F.max_pool2d(x, 3, pooling[0], pooling[1], ceil_mode=pooling[2])
    got = torch.ops.googlenet_fused.max_pool3x3(x, *pooling)
    with_taps, taps = torch.ops.googlenet_fused.max_pool3x3_with_taps(x, *pooling)
    assert taps.dtype == torch.uint8 and taps.shape == ref.shape
    assert taps.numel() == 0 or int(taps.max()) <= 8  # a position in the 3×3 window
    for out in (got, with_taps):
        assert out.shape == ref.shape and out.dtype == ref.dtype
        assert torch.equal(torch.isnan(out), torch.isnan(ref)), f"NaN differs for {tuple(x.shape)}"
        assert torch.equal(out.nan_to_num(0.0), ref.nan_to_num(0.0)), (
            f"values differ for {tuple(x.shape)}, {pooling}")
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 5), (2, 3, 5, 1), (3, 5, 2, 2),
                                   (2, 17, 7, 7), (1, 130, 14, 3), (16, 64, 9, 11),
                                   (1, 3, 300, 4)])
def test_matches_max_pool2d(dtype, layout, shape):
    x, = make_inputs([shape], dtype, layout)
    for pooling in POOLINGS:
        try:
            F.max_pool2d(x, 3, pooling[0], pooling[1], ceil_mode=pooling[2])
        except RuntimeError:  # too small for this pooling: the kernel must refuse it too
            with pytest.raises(RuntimeError, match="too small"):
                torch.ops.googlenet_fused.max_pool3x3(x, *pooling)
            continue
        got = check(x, pooling)
        if layout != "strided":  # the input's layout is kept
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            assert (got.is_contiguous(memory_format=fmt) or shape[1] == 1
                    or got.shape[2] * got.shape[3] == 1)


def test_channel_slice_of_channels_last():
    big, = make_inputs([(2, 20, 6, 5)], layout="channels_last")
    x = big[:, 3:14]  # channels contiguous at each pixel, pixel stride 20
    assert x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last)
    check(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_nan_inf_and_ties(layout, dtype):
    # bf16 is compared as the float its bits make (csrc/max_pool3x3.cpp's Values): the same
    # NaN, infinity and tie rules as every other dtype
    x, = make_inputs([(2, 6, 5, 5)], dtype, layout)
    x[0, 1, 2, 2] = float("nan")
    x[0, 2, 0, 0] = float("nan")
    x[1, 3, 4, 4] = float("inf")
    x[1, 4] = float("-inf")  # a whole plane of -inf: the output must be -inf, not a padding value
    x[1, 5] = 1.0  # all ties
    got = check(x)
    assert torch.isnan(got[0, 1]).sum() == 9 and torch.isnan(got[0, 2]).sum() == 4
    assert (got[1, 4] == float("-inf")).all()


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 0, 3, 3), (2, 4, 0, 3)])
def test_empty(shape):
    assert torch.ops.googlenet_fused.max_pool3x3(torch.randn(shape)).shape == shape


def test_bad_input_errors():
    with pytest.raises(RuntimeError, match=r"4-D.*\[3, 4, 4\]"):
        torch.ops.googlenet_fused.max_pool3x3(torch.randn(3, 4, 4))
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ops.googlenet_fused.max_pool3x3(torch.ones(1, 2, 3, 3, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="padding 0 or 1.*stride 1 and padding 2"):
        torch.ops.googlenet_fused.max_pool3x3_with_taps(torch.randn(1, 2, 5, 5), 1, 2)
    with pytest.raises(RuntimeError, match="stride >= 1"):
        torch.ops.googlenet_fused.max_pool3x3(torch.randn(1, 2, 5, 5), 0)
    with pytest.raises(RuntimeError, match=r"\[1, 2, 2, 5\] is too small"):
        torch.ops.googlenet_fused.max_pool3x3(torch.randn(1, 2, 2, 5), 2, 0)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradients_route_like_max_pool2d(layout, pooling):
    x, = make_inputs([(2, 5, 7, 6)], torch.float64, layout)
    x[0, 0, :3, :3] = 2.0  # ties: the gradient goes where ATen sends it
    x.requires_grad_()
    ref_out = F.max_pool2d(x, 3, pooling[0], pooling[1], ceil_mode=pooling[2])
    grad = torch.randn_like(ref_out)
    for pool in (lambda t: ops.max_pool3x3(t, *pooling),  # keeps taps
                 lambda t: torch.ops.googlenet_fused.max_pool3x3(t, *pooling)):  # pools again
        got, = torch.autograd.grad(pool(x), x, grad)
        ref, = torch.autograd.grad(ref_out, x, grad, retain_graph=True)
        assert torch.equal(got, ref)
    y, = make_inputs([(1, 3, 5, 6)], torch.float64, layout)
    assert torch.autograd.gradcheck(lambda t: ops.max_pool3x3(t, *pooling), (y.requires_grad_(),))


def test_in_place_op_after_the_pool_keeps_its_gradient():
    """Only the input and the taps are saved: an in-place ReLU on the output is legal, as after
    F.max_pool2d."""
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    got, = torch.autograd.grad(F.relu(ops.max_pool3x3(x, 2, 0, True), inplace=True).sum(), x)
    ref, = torch.autograd.grad(F.relu(F.max_pool2d(x, 3, 2, 0, ceil_mode=True)).sum(), x)
    assert torch.equal(got, ref)


def test_opcheck_and_compile():
    x, = make_inputs([(2, 5, 6, 4)], layout="channels_last")
    for pooling in ((), (2, 0, True)):
        torch.library.opcheck(torch.ops.googlenet_fused.max_pool3x3, (x, *pooling))
        torch.library.opcheck(torch.ops.googlenet_fused.max_pool3x3_with_taps, (x, *pooling))
    torch._dynamo.reset()
    xg = x.clone().requires_grad_()
    got = torch.compile(lambda t: ops.max_pool3x3(t, 2, 1) + 1, fullgraph=True)(xg)
    torch.testing.assert_close(got, F.max_pool2d(x, 3, 2, 1) + 1)
    got.sum().backward()
    ref, = torch.autograd.grad(F.max_pool2d(x.requires_grad_(), 3, 2, 1).sum(), x)
    assert torch.equal(xg.grad, ref)


def test_wrapper_falls_back_without_the_extension(monkeypatch):
    monkeypatch.setattr(ops, "EXTENSION_ERROR", "ImportError: no _C")
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(ops.max_pool3x3(x), F.max_pool2d(x, 3, 1, 1))
    out, indices = ops.max_pool3x3_with_taps(x, 2, 0, True)  # ATen's indices stand in for taps
    assert indices.dtype == torch.int64 and ops.pool_taps_dtype(x) == torch.int64
    grad = torch.randn_like(out)
    acc = torch.randn_like(x)
    expected = acc + torch.autograd.grad(
        F.max_pool2d(x.requires_grad_(), 3, 2, 0, ceil_mode=True), x, grad)[0]
    got = ops.max_pool3x3_backward(grad, x, indices, 2, 0, True, accumulate_into=acc)
    assert got is acc and torch.equal(acc, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice", "strided"])
@pytest.mark.parametrize("shape", [(2, 5, 6, 4), (1, 17, 1, 1), (3, 33, 7, 1), (1, 3, 1, 9),
                                   (2, 70, 3, 5), (1, 130, 5, 5)])  # 70, 130: channel blocks
@pytest.mark.parametrize("pooling", [(1, 1, False), (2, 0, True), (2, 1, False)])
def test_backward_op_routes_like_max_pool2d(dtype, layout, shape, pooling):
    # Integer values: many ties; NaN and -inf windows too.
    x = torch.randint(-3, 3, shape).to(torch.float64)
    x.view(-1)[::7] = float("-inf")
    x.view(-1)[5::11] = float("nan")
    if shape[2] > 2 and shape[3] > 2:
        x[0, 0, 1, 1] = x[0, 0, 2, 2] = float("nan")  # two NaNs in one window: the last wins
    x = x.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "channel_slice":  # channels_last, pixel stride 2C
        x = torch.cat([x, x], 1).contiguous(memory_format=torch.channels_last)[:, 1:shape[1] + 1]
    elif layout == "strided":
        x = torch.cat([x, x], 3)[..., ::2]
    xr = x.double().requires_grad_()
    try:
        ref_out = F.max_pool2d(xr, 3, pooling[0], pooling[1], ceil_mode=pooling[2])
    except RuntimeError:
        pytest.skip("too small for this pooling")
    grad = torch.randint(-4, 5, ref_out.shape).to(dtype)  # exact sums in every dtype
    if layout != "nchw":
        grad = grad.contiguous(memory_format=torch.channels_last)
    expected, = torch.autograd.grad(ref_out, xr, grad.double())
    _, taps = torch.ops.googlenet_fused.max_pool3x3_with_taps(x, *pooling)
    got = ops.max_pool3x3_backward(grad, x, taps, *pooling)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got.double(), expected)
    # Added in place to a gradient of any layout: here the transpose of x's.
    acc = torch.randint(-2, 3, shape).to(dtype)
    acc = acc.contiguous(memory_format=torch.channels_last) if layout == "nchw" else acc
    before = acc.double().clone()  # (a view of acc itself in float64)
    assert ops.max_pool3x3_backward(grad, x, taps, *pooling, accumulate_into=acc) is acc
    assert torch.equal(acc.double(), before + expected)


def test_backward_op_errors_and_opcheck():
    x = torch.randn(2, 3, 4, 4)
    out, taps = torch.ops.googlenet_fused.max_pool3x3_with_taps(x, 2, 1)
    into = torch.ops.googlenet_fused.max_pool3x3_backward_into
    with pytest.raises(RuntimeError, match=r"grad_out \[2, 3, 4, 4\] and taps \[2, 3, 2, 2\] "
                                           r"must have the pooled shape \[2, 3, 2, 2\]"):
        into(torch.empty_like(x), x, taps, 2, 1)
    with pytest.raises(RuntimeError, match="taps must be uint8"):
        into(torch.empty_like(x), out, taps.long(), 2, 1)
    with pytest.raises(RuntimeError, match="grad_out is Double but grad_input is Float"):
        into(torch.empty_like(x), out.double(), taps, 2, 1)
    with pytest.raises(RuntimeError, match="overlaps"):
        big = torch.zeros(2, 3, 4, 4)
        into(big, big[:, :, :2, :2], taps, 2, 1)
    torch.library.opcheck(into, (torch.empty_like(x), out, taps, 2, 1, False, True))
