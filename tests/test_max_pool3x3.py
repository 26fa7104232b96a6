"""The extension's CPU max_pool3x3 against F.max_pool2d(x, 3, 1, 1): values must be identical
(max is exact), NaN where PyTorch has NaN, and gradients routed the same way."""
import pytest
import torch
import torch.nn.functional as F

from googlenet_fused import ops
from helpers import make_inputs

pytestmark = pytest.mark.skipif(not ops.extension_available(),
                                reason=f"extension not built: {ops.EXTENSION_ERROR}")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def check(x):
    got = torch.ops.googlenet_fused.max_pool3x3(x)
    ref = F.max_pool2d(x, 3, 1, 1)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert torch.equal(torch.isnan(got), torch.isnan(ref)), f"NaN differs for {tuple(x.shape)}"
    assert torch.equal(got.nan_to_num(0.0), ref.nan_to_num(0.0)), f"values differ for {tuple(x.shape)}"
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 5), (2, 3, 5, 1), (3, 5, 2, 2),
                                   (2, 17, 7, 7), (1, 130, 14, 3), (16, 64, 9, 11),
                                   (1, 3, 300, 4)])
def test_matches_max_pool2d(dtype, layout, shape):
    x, = make_inputs([shape], dtype, layout)
    got = check(x)
    if layout != "strided":  # the input's layout is kept
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        assert got.is_contiguous(memory_format=fmt) or shape[1] == 1 or shape[2] * shape[3] == 1


def test_channel_slice_of_channels_last():
    big, = make_inputs([(2, 20, 6, 5)], layout="channels_last")
    x = big[:, 3:14]  # channels contiguous at each pixel, pixel stride 20
    assert x.stride(1) == 1 and not x.is_contiguous(memory_format=torch.channels_last)
    check(x)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_nan_inf_and_ties(layout):
    x, = make_inputs([(2, 6, 5, 5)], layout=layout)
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


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradients_route_like_max_pool2d(layout):
    x, = make_inputs([(2, 5, 6, 4)], torch.float64, layout)
    x[0, 0, :3, :3] = 2.0  # ties: the gradient goes where ATen sends it
    x.requires_grad_()
    grad = torch.randn(2, 5, 6, 4, dtype=torch.float64)
    got, = torch.autograd.grad(ops.max_pool3x3(x), x, grad)
    ref, = torch.autograd.grad(F.max_pool2d(x, 3, 1, 1), x, grad)
    assert torch.equal(got, ref)
    y, = make_inputs([(1, 3, 4, 5)], torch.float64, layout)
    assert torch.autograd.gradcheck(ops.max_pool3x3, (y.requires_grad_(),))


def test_opcheck_and_compile():
    x, = make_inputs([(2, 5, 6, 4)], layout="channels_last")
    torch.library.opcheck(torch.ops.googlenet_fused.max_pool3x3, (x,))
    torch._dynamo.reset()
    got = torch.compile(lambda t: ops.max_pool3x3(t) + 1, fullgraph=True)(x)
    torch.testing.assert_close(got, F.max_pool2d(x, 3, 1, 1) + 1)


def test_wrapper_falls_back_without_the_extension(monkeypatch):
    monkeypatch.setattr(ops, "EXTENSION_ERROR", "ImportError: no _C")
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(ops.max_pool3x3(x), F.max_pool2d(x, 3, 1, 1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice", "strided"])
@pytest.mark.parametrize("shape", [(2, 5, 6, 4), (1, 17, 1, 1), (3, 33, 7, 1), (1, 3, 1, 9),
                                   (2, 70, 3, 5)])  # 70: channel blocks of 64, one partial
def test_backward_op_routes_like_max_pool2d(dtype, layout, shape):
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
    grad = torch.randint(-4, 5, shape).to(dtype)  # exact sums in every dtype
    if layout != "nchw":
        grad = grad.contiguous(memory_format=torch.channels_last)
    got = torch.ops.googlenet_fused.max_pool3x3_backward(grad, x, ops.max_pool3x3(x))
    xr = x.double().requires_grad_()
    expected, = torch.autograd.grad(F.max_pool2d(xr, 3, 1, 1), xr, grad.double())
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(got.double(), expected)


def test_backward_op_errors_and_opcheck():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(RuntimeError, match=r"must share one 4-D shape"):
        torch.ops.googlenet_fused.max_pool3x3_backward(torch.randn(2, 3, 4, 5), x, x)
    torch.library.opcheck(torch.ops.googlenet_fused.max_pool3x3_backward,
                          (torch.randn(2, 3, 4, 4), x, ops.max_pool3x3(x)))
