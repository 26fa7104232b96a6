"""The extension op lrn_relu_concat against F.local_response_norm + relu + cat."""
import pytest
import torch
import torch.nn.functional as F

from googlenet_fused import ops
from helpers import assert_matches, check_backward, make_inputs as make, plain_lowp

pytestmark = pytest.mark.skipif(not ops.extension_available(),
                                reason=f"extension not built: {ops.EXTENSION_ERROR}")
LRN = (5, 1e-3, 0.75, 2.0)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def reference(branches, size=5, alpha=1e-3, beta=0.75, k=2.0):
    return torch.cat([F.relu(F.local_response_norm(b, size, alpha, beta, k)) for b in branches], 1)


def check(branches, out=None, lrn=LRN):
    got = ops.lrn_relu_concat(branches, *lrn, out=out)
    ref64 = reference([b.double() for b in branches], *lrn)
    lowp = None
    if branches[0].dtype in (torch.float16, torch.bfloat16):
        lowp = plain_lowp(reference, branches, *lrn)
    assert_matches(got, ref64, lowp, what=f"{[tuple(b.shape) for b in branches]} {branches[0].dtype}")
    return got


CHANNEL_SETS = [(1,), (2, 3), (4, 5, 6, 7), (1, 1, 1), (192, 208, 48, 64), (130, 17)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("channels", CHANNEL_SETS)
@pytest.mark.parametrize("n, hw", [(1, (1, 1)), (33, (3, 5)), (2, (7, 7))])
def test_matches_reference(dtype, layout, channels, n, hw):
    check(make([(n, c, *hw) for c in channels], dtype, layout))


@pytest.mark.parametrize("lrn", [(1, 1e-3, 0.75, 2.0), (3, 0.5, 0.5, 1.0), (4, 2.0, 1.3, 0.5),
                                 (7, 1e-4, 0.75, 1.0)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_other_lrn_parameters(lrn, layout):
    check(make([(2, 9, 4, 4), (2, 3, 4, 4)], layout=layout), lrn=lrn)


def test_mixed_layouts_follow_first_branch():
    a, = make([(2, 6, 5, 5)], layout="channels_last")
    b, = make([(2, 3, 5, 5)])
    got = check([a, b])
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert check([b, a]).is_contiguous()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_out_into_slice_leaves_the_rest(dtype, layout):
    branches = make([(3, 4, 6, 5), (3, 9, 6, 5)], dtype, layout)
    big = torch.full((3, 20, 6, 5), 1234.0, dtype=dtype)
    if layout == "channels_last":
        big = big.contiguous(memory_format=torch.channels_last)
    sl = big[:, 5:18]
    assert not sl.is_contiguous()
    got = check(branches, out=sl)
    assert got.data_ptr() == sl.data_ptr()
    assert (big[:, :5] == 1234).all() and (big[:, 18:] == 1234).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (14, 14)])
def test_channels_last_branches_into_nchw_out(dtype, hw):
    """An NCHW module output filled from channels_last branches: the kernel reads them in place
    and stores a block of pixels per task transposed (14×14 = 196 pixels: a partial last block),
    into the whole tensor or a channel slice, leaving the rest alone."""
    branches = make([(3, c, *hw) for c in (192, 17, 48, 1, 5)], dtype, "channels_last")
    check(branches, out=torch.full((3, 263, *hw), float("nan"), dtype=dtype))
    big = torch.full((3, 270, *hw), 1234.0, dtype=dtype)
    got = check(branches, out=big[:, 3:266])
    assert got.data_ptr() == big[:, 3:266].data_ptr()
    assert (big[:, :3] == 1234).all() and (big[:, 266:] == 1234).all()


def test_single_branch_lrn_relu():
    x, = make([(4, 11, 3, 3)])
    torch.testing.assert_close(ops.lrn_relu(x), reference([x]), rtol=1e-5, atol=1e-6)
    out = torch.empty_like(x)
    assert ops.lrn_relu(x, out=out) is out
    torch.testing.assert_close(out, reference([x]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("relu", [True, False])
def test_bias_added_before_the_lrn(dtype, layout, relu):
    branches = make([(3, 7, 5, 4), (3, 16, 5, 4), (3, 1, 5, 4)], dtype, layout)
    biases = [torch.randn(b.shape[1]).to(dtype) for b in branches]

    def expected(bs, bias, *lrn):
        act = F.relu if relu else (lambda t: t)
        return torch.cat([act(F.local_response_norm(b + c.view(1, -1, 1, 1), *lrn))
                          for b, c in zip(bs, bias)], 1)

    got = ops.lrn_relu_concat(branches, *LRN, relu=relu, bias=biases)
    lowp = None
    if dtype in (torch.float16, torch.bfloat16):
        lowp = plain_lowp(lambda ts, *a: expected(ts[:3], ts[3:], *a), branches + biases, *LRN)
    assert_matches(got, expected([b.double() for b in branches], [c.double() for c in biases],
                                 *LRN), lowp, what=f"bias {dtype} {layout}")
    big = torch.zeros(3, 30, 5, 4, dtype=dtype)
    ops.lrn_relu_concat(branches, *LRN, relu=relu, bias=biases, out=big[:, 3:27])
    torch.testing.assert_close(big[:, 3:27], got)


def test_bias_errors():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    with pytest.raises(RuntimeError, match=r"one bias per branch \(2\), got 1"):
        ops.lrn_relu_concat([a, b], bias=[torch.zeros(3)])
    with pytest.raises(RuntimeError, match=r"bias 1 must have shape \[5\].*\[2, 5, 4, 4\].*\[4\]"):
        ops.lrn_relu_concat([a, b], bias=[torch.zeros(3), torch.zeros(4)])
    with pytest.raises(RuntimeError, match="bias 0 is Double"):
        ops.lrn_relu_concat([a], bias=[torch.zeros(3, dtype=torch.float64)])


def plain_lrn(branches, size=5, alpha=1e-3, beta=0.75, k=2.0):
    return torch.cat([F.local_response_norm(b, size, alpha, beta, k) for b in branches], 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("lrn", [(5, 1e-3, 0.75, 2.0), (5, 1e-4, 0.75, 1.0), (3, 0.5, 0.5, 1.0),
                                 (4, 2.0, 1.3, 0.5)])
def test_without_relu_is_plain_lrn_on_signed_input(dtype, layout, lrn):
    branches = make([(3, 7, 5, 4), (3, 2, 5, 4)], dtype, layout)
    got = ops.lrn_relu_concat(branches, *lrn, relu=False)
    assert (got < 0).any()  # signed values kept
    lowp = plain_lowp(plain_lrn, branches, *lrn) if dtype in (torch.float16, torch.bfloat16) \
        else None
    assert_matches(got, plain_lrn([b.double() for b in branches], *lrn), lowp,
                   what=f"relu=False {dtype} {layout} {lrn}")
    x = branches[0]
    expected = F.local_response_norm(x.double(), *lrn)
    assert_matches(ops.local_response_norm(x, *lrn), expected,
                   plain_lowp(lambda ts, *a: F.local_response_norm(ts[0], *a), [x], *lrn)
                   if lowp is not None else None, what="local_response_norm")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_without_relu_nan_inf_and_into_slice(layout):
    a, b = make([(2, 6, 3, 3), (2, 3, 3, 3)], layout=layout)
    a[0, 2, 1, 1], a[1, 0, 0, 0], b[1, 1, 2, 2] = float("nan"), float("-inf"), float("inf")
    big = torch.full((2, 11, 3, 3), 7.0)
    ops.lrn_relu_concat([a, b], relu=False, out=big[:, 1:10])
    torch.testing.assert_close(big[:, 1:10], plain_lrn([a, b]), equal_nan=True)
    assert (big[:, 0] == 7).all() and (big[:, 10] == 7).all()


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 4, 0, 3), (2, 4, 3, 0)])
def test_empty(shape):
    branches = [torch.randn(shape), torch.randn(shape[0], 2, *shape[2:])]
    got = ops.lrn_relu_concat(branches)
    assert got.shape == (shape[0], 6, *shape[2:])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_nan_and_inf_propagate_like_pytorch(layout):
    branches = make([(2, 8, 4, 4), (2, 5, 4, 4)], layout=layout)
    branches[0][0, 3, 1, 1] = float("nan")
    branches[0][1, 0, 2, 2] = float("inf")
    branches[1][1, 4, 0, 0] = float("-inf")
    got = ops.lrn_relu_concat(branches)
    ref = reference(branches)
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.isnan(got).any()
    torch.testing.assert_close(got, ref, equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_extreme_magnitudes_like_pytorch_fp32(relu, layout):
    """fp32 channels_last takes d^-3/4 from reciprocal square root estimates: over magnitudes
    from 1e-3 to 1e6, squares that overflow (3e19: PyTorch's fp32 gives 0 there too), ±inf and
    NaN, the same NaN and inf as ATen's fp32 LRN and values within 1e-6 of float64's (37
    channels: two full vectors of 16 and a tail)."""
    x = torch.randn(4, 37, 9, 9) * torch.logspace(-3, 6, 37).view(1, 37, 1, 1)
    x[0, 3, 2, 2], x[1, 5, 1, 1], x[2, 7, 0, 0], x[3, 9, 3, 3] = (
        float("nan"), float("inf"), -float("inf"), 3e19)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    got = ops.lrn_relu_concat([x], *LRN, relu=relu)
    ref32 = F.local_response_norm(x, *LRN)
    ref64 = F.local_response_norm(x.double(), *LRN)
    if relu:
        ref32, ref64 = F.relu(ref32), F.relu(ref64)
    assert torch.equal(torch.isnan(got), torch.isnan(ref32))
    assert torch.equal(torch.isinf(got), torch.isinf(ref32))
    finite = torch.isfinite(ref32) & (ref32 != 0)
    assert finite.sum() > 0.4 * x.numel()  # the comparison covers most values
    rel = (got.double() - ref64).abs()[finite] / ref64.abs()[finite]
    assert rel.max() < 1e-6, rel.max()
    torch.testing.assert_close(got[~finite & ~torch.isnan(ref32)],
                               ref32[~finite & ~torch.isnan(ref32)], rtol=0, atol=0)


@pytest.mark.parametrize("relu", [True, False])
def test_backward_extreme_magnitudes_fp32(relu):
    """fp32 channels_last backward takes s = d^-3/4 and s / d from the estimates (planar computes
    them exactly): over magnitudes from 1e-3 to 1e6, an overflowing square, ±inf and NaN, the
    same NaN, inf and zero values as the exact path, and a relative error from float64 at most
    twice the exact path's largest (cancellation between the two terms makes both about 1e-4 at
    worst; 37 channels: two full vectors of 16 and a tail)."""
    from helpers import backward_reference

    x = torch.randn(4, 37, 9, 9) * torch.logspace(-3, 6, 37).view(1, 37, 1, 1)
    x[0, 3, 2, 2], x[1, 5, 1, 1], x[2, 7, 0, 0], x[3, 9, 3, 3] = (
        float("nan"), float("inf"), -float("inf"), 3e19)
    grad = torch.randn(4, 37, 9, 9)
    backward = torch.ops.googlenet_fused.lrn_relu_concat_backward
    got = backward(grad, [x.contiguous(memory_format=torch.channels_last)], *LRN, relu, None)[0]
    exact = backward(grad, [x], *LRN, relu, None)[0]
    ref = backward_reference(grad, [x], LRN, relu)[0]
    assert torch.equal(got.isnan(), exact.isnan()) and got.isnan().any()
    regular = torch.isfinite(exact) & (exact != 0)
    assert regular.sum() > 0.9 * x.numel()
    torch.testing.assert_close(got[~regular & ~exact.isnan()], exact[~regular & ~exact.isnan()],
                               rtol=0, atol=0)

    def largest_rel(t):
        return ((t.double() - ref).abs() / ref.abs())[regular].max().item()

    assert largest_rel(got) <= 2 * largest_rel(exact), (largest_rel(got), largest_rel(exact))


def test_bad_input_errors():
    a = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="at least one branch"):
        ops.lrn_relu_concat([])
    with pytest.raises(RuntimeError, match=r"agree in N, H and W.*\[2, 3, 4, 4\].*\[2, 3, 5, 4\]"):
        ops.lrn_relu_concat([a, torch.randn(2, 3, 5, 4)])
    with pytest.raises(RuntimeError, match=r"agree in N, H and W"):
        ops.lrn_relu_concat([a, torch.randn(3, 3, 4, 4)])
    with pytest.raises(RuntimeError, match="share a dtype"):
        ops.lrn_relu_concat([a, a.double()])
    with pytest.raises(RuntimeError, match="floating point"):
        ops.lrn_relu_concat([torch.ones(2, 3, 4, 4, dtype=torch.int32)])
    with pytest.raises(RuntimeError, match="4-D"):
        ops.lrn_relu_concat([torch.randn(3, 4, 4)])
    with pytest.raises(RuntimeError, match="size must be >= 1"):
        ops.lrn_relu_concat([a], 0)
    with pytest.raises(RuntimeError, match=r"out must have shape \[2, 3, 4, 4\].*\[2, 4, 4, 4\]"):
        ops.lrn_relu_concat([a], out=torch.empty(2, 4, 4, 4))
    with pytest.raises(RuntimeError, match="dtype"):
        ops.lrn_relu_concat([a], out=torch.empty(2, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="overlaps"):
        ops.lrn_relu_concat([a], out=a)
    buf = torch.randn(2, 6, 4, 4)
    with pytest.raises(RuntimeError, match="overlaps"):
        ops.lrn_relu_concat([buf[:, :3]], out=buf[:, 2:5])
    with pytest.raises(RuntimeError, match="share memory"):
        ops.lrn_relu_concat([a], out=torch.empty(2, 3, 4, 1).expand(2, 3, 4, 4))


def test_meta_device_error_or_shape():
    # meta tensors go through the fake kernel: shape only
    got = ops.lrn_relu_concat([torch.empty(2, 3, 4, 4, device="meta")] * 2)
    assert got.shape == (2, 6, 4, 4)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradcheck(layout):
    branches = [b.requires_grad_() for b in make([(2, 1, 3, 3), (2, 4, 3, 3), (2, 7, 3, 3)],
                                                 torch.float64, layout, scale=10.0)]
    assert torch.autograd.gradcheck(lambda *bs: ops.lrn_relu_concat(bs), branches)
    assert torch.autograd.gradcheck(lambda *bs: ops.lrn_relu_concat(bs, 3, 0.5, 1.3, 0.7),
                                    branches)
    assert torch.autograd.gradcheck(lambda *bs: ops.lrn_relu_concat(bs, relu=False), branches)
    biases = [torch.randn(b.shape[1], dtype=torch.float64, requires_grad=True) for b in branches]
    assert torch.autograd.gradcheck(lambda *t: ops.lrn_relu_concat(t[:3], bias=t[3:]),
                                    (*branches, *biases))
    assert torch.autograd.gradcheck(
        lambda *t: ops.lrn_relu_concat(t[:3], 3, 0.5, 1.3, 0.7, relu=False, bias=t[3:]),
        (*branches, *biases))
    assert torch.autograd.gradcheck(
        lambda *bs: ops.lrn_relu_concat(bs, 3, 0.5, 1.3, 0.7, relu=False), branches)


@pytest.mark.parametrize("lrn", [(), (5, 1e-3, 0.75, 2.0), (3,), (5, 1e-3, 0.5),
                                 (5, 1e-3, 0.75, 2.0, True)])
def test_backward_with_arguments_at_schema_defaults(lrn):
    # The dispatcher drops trailing arguments equal to their schema defaults; torch 2.11 then
    # wants exactly one gradient per argument actually passed.
    branches = make([(2, 3, 2, 2), (2, 6, 2, 2)], torch.float64)
    fused = [b.clone().requires_grad_() for b in branches]
    torch.ops.googlenet_fused.lrn_relu_concat(fused, *lrn).square().sum().backward()
    plain = [b.clone().requires_grad_() for b in branches]
    reference(plain, *lrn[:4]).square().sum().backward()
    for got, expected in zip(fused, plain):
        torch.testing.assert_close(got.grad, expected.grad)


def test_opcheck():
    args = (make([(2, 1, 3, 3), (2, 5, 3, 3)]), 5, 1e-3, 0.75, 2.0)
    torch.library.opcheck(torch.ops.googlenet_fused.lrn_relu_concat, args)
    out = torch.empty(2, 9, 3, 3)[:, 1:7]
    torch.library.opcheck(torch.ops.googlenet_fused.lrn_relu_concat_into, (out, *args))
    torch.library.opcheck(torch.ops.googlenet_fused.lrn_relu_concat, (*args, False))
    biases = [torch.randn(1), torch.randn(5)]
    torch.library.opcheck(torch.ops.googlenet_fused.lrn_relu_concat, (*args, True, biases))
    torch.library.opcheck(torch.ops.googlenet_fused.lrn_relu_concat_into,
                          (out, *args, True, biases))
    torch.library.opcheck(torch.ops.googlenet_fused.lrn_relu_concat_into, (out, *args, False))


@pytest.mark.slow
def test_compile_fullgraph_no_graph_break():
    branches = make([(2, 5, 4, 4), (2, 3, 4, 4)])

    def fn(bs):
        out = torch.empty(2, 10, 4, 4)
        out[:, 8:] = 0
        ops.lrn_relu_concat(bs, out=out[:, :8])
        return ops.lrn_relu_concat(bs) * 2 + out[:, :8]

    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True)(branches)
    torch.testing.assert_close(got, 3 * reference(branches), rtol=1e-5, atol=1e-5)


def test_missing_extension_message(monkeypatch):
    monkeypatch.setattr(ops, "EXTENSION_ERROR", "ImportError: no _C")
    with pytest.raises(RuntimeError, match=r"lrn_relu_concat.*no _C.*pip install --no-build-isolation"):
        ops.lrn_relu_concat([torch.randn(1, 2, 2, 2)])


# ------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("channels", CHANNEL_SETS)
@pytest.mark.parametrize("n, hw", [(1, (1, 1)), (33, (3, 5)), (16, (14, 14))])
def test_cuda_matches_reference(dtype, layout, channels, n, hw):
    check(make([(n, c, *hw) for c in channels], dtype, layout, device="cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_cuda_out_slice_gradcheck_and_many_branches(layout):
    branches = make([(3, c, 6, 5) for c in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)], layout=layout,
                    device="cuda")  # ten branches: more than one launch
    big = torch.full((3, 60, 6, 5), 1234.0, device="cuda")
    if layout == "channels_last":
        big = big.contiguous(memory_format=torch.channels_last)
    check(branches, out=big[:, 2:57])
    assert (big[:, :2] == 1234).all() and (big[:, 57:] == 1234).all()
    bs = [b.double().requires_grad_() for b in branches[:3]]
    assert torch.autograd.gradcheck(lambda *b: ops.lrn_relu_concat(b), bs)
    with pytest.raises(RuntimeError, match="one device"):
        ops.lrn_relu_concat([branches[0], branches[1].cpu()])


# ------------------------------------------------------------------------------- backward op
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("channels", [(1,), (2, 3), (192, 208, 48, 64), (130, 17)])
@pytest.mark.parametrize("n, hw", [(1, (1, 1)), (3, (5, 7)), (2, (14, 14))])
def test_backward_op_matches_the_aten_formula(dtype, layout, channels, n, hw):
    branches = make([(n, c, *hw) for c in channels], dtype, layout)
    grad_out = make([(n, sum(channels), *hw)], dtype, layout)[0]
    check_backward(torch.ops.googlenet_fused.lrn_relu_concat_backward, grad_out, branches)


@pytest.mark.parametrize("lrn", [(1, 1e-3, 0.75, 2.0), (3, 0.5, 0.5, 1.0), (4, 2.0, 1.3, 0.5),
                                 (7, 1e-4, 0.75, 1.0)])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_backward_op_other_lrn_bias_and_grad_layouts(lrn, relu, layout):
    branches = make([(2, 9, 4, 3), (2, 3, 4, 3)], torch.float64, layout)
    bias = [torch.randn(9, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    op = torch.ops.googlenet_fused.lrn_relu_concat_backward
    wide = torch.randn(2, 20, 4, 3, dtype=torch.float64)
    for grad_out in (wide[:, 4:16],                                   # a channel slice
                     torch.randn(2, 12, 4, 6, dtype=torch.float64)[..., ::2],   # strided
                     torch.ones((), dtype=torch.float64).expand(2, 12, 4, 3)):  # from .sum()
        check_backward(op, grad_out, branches, lrn, relu, bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (14, 14)])
def test_backward_op_channels_last_branches_nchw_grad(dtype, hw):
    """The gradient of an NCHW module output reaches channels_last branches: read in place, a
    block of pixels per task (14×14 = 196 pixels: a partial last block)."""
    branches = make([(3, c, *hw) for c in (192, 17, 48, 5)], dtype, "channels_last")
    nchw = make([(3, 262, *hw)], dtype, "nchw")[0]
    wide = make([(3, 270, *hw)], dtype, "nchw")[0]
    for grad_out in (nchw, wide[:, 3:265]):
        check_backward(torch.ops.googlenet_fused.lrn_relu_concat_backward, grad_out, branches)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_backward_into_writes_each_gradient_in_place(dtype, layout):
    """lrn_relu_concat_backward_into: the gradients land in the given tensors (here channel
    slices of one tensor, as the merged 1×1s' backward reads them, or in the other layout),
    equal to lrn_relu_concat_backward's in the destination's layout (the kernel runs in it: fp32
    channels_last estimates d^-3/4, planar computes it exactly); what lies around them is
    untouched."""
    branches = make([(2, c, 5, 7) for c in (9, 4, 17)], dtype, layout)
    grad_out = make([(2, 30, 5, 7)], dtype, layout)[0]
    bias = [torch.randn(b.shape[1], dtype=dtype) for b in branches]
    into = torch.ops.googlenet_fused.lrn_relu_concat_backward_into
    other = "nchw" if layout == "channels_last" else "channels_last"
    for dest in (layout, other):
        fmt = torch.channels_last if dest == "channels_last" else torch.contiguous_format
        expected = torch.ops.googlenet_fused.lrn_relu_concat_backward(
            grad_out, [b.contiguous(memory_format=fmt) for b in branches], *LRN, True, bias)
        whole = make([(2, 34, 5, 7)], dtype, dest)[0]
        before = whole.clone()
        grads = list(whole[:, 2:32].split([9, 4, 17], 1))
        into(grads, grad_out, branches, *LRN, True, bias)
        for g, e in zip(grads, expected):
            assert torch.equal(g, e)
        assert torch.equal(whole[:, :2], before[:, :2]) and torch.equal(whole[:, 32:],
                                                                      before[:, 32:])


def test_backward_one_channel_branch_among_channels_last_ones():
    """A 1-channel branch's channels_last gradient is also planar: still one layout for the
    kernel, written in place by both ops."""
    branches = make([(2, c, 3, 4) for c in (5, 1, 3)], torch.float64, "channels_last")
    grad_out = make([(2, 9, 3, 4)], torch.float64, "nchw")[0]
    check_backward(torch.ops.googlenet_fused.lrn_relu_concat_backward, grad_out, branches)
    grads = [torch.empty_like(b) for b in branches]
    into = torch.ops.googlenet_fused.lrn_relu_concat_backward_into
    check_backward(lambda *args: (into(grads, *args), grads)[1], grad_out, branches)


def test_backward_into_errors_and_opcheck():
    a, b, g = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4), torch.randn(2, 8, 4, 4)
    into = torch.ops.googlenet_fused.lrn_relu_concat_backward_into
    with pytest.raises(RuntimeError, match=r"one gradient per branch \(2\), got 1"):
        into([torch.empty(2, 3, 4, 4)], g, [a, b], *LRN, True)
    with pytest.raises(RuntimeError, match=r"gradient 1 is Float \[2, 4, 4, 4\].*\[2, 5, 4, 4\]"):
        into([torch.empty(2, 3, 4, 4), torch.empty(2, 4, 4, 4)], g, [a, b], *LRN, True)
    with pytest.raises(RuntimeError, match="gradient 0 overlaps branch 0"):
        into([a, torch.empty(2, 5, 4, 4)], g, [a, b], *LRN, True)
    with pytest.raises(RuntimeError, match="gradient 1 overlaps grad_out"):
        into([torch.empty(2, 3, 4, 4), g[:, 3:]], g, [a, b], *LRN, True)
    with pytest.raises(RuntimeError, match="share memory"):
        into([torch.empty(2, 3, 4, 1).expand(2, 3, 4, 4), torch.empty(2, 5, 4, 4)], g, [a, b],
             *LRN, True)
    torch.library.opcheck(into, ([torch.empty(2, 3, 4, 4), torch.empty(2, 5, 4, 4)], g, [a, b],
                                 *LRN, True, [torch.randn(3), torch.randn(5)]))


def test_backward_op_errors_and_opcheck():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    op = torch.ops.googlenet_fused.lrn_relu_concat_backward
    with pytest.raises(RuntimeError, match=r"grad_out must have shape \[2, 8, 4, 4\].*\[2, 7, 4, 4\]"):
        op(torch.randn(2, 7, 4, 4), [a, b], *LRN, True)
    with pytest.raises(RuntimeError, match="grad_out is Double"):
        op(torch.randn(2, 8, 4, 4, dtype=torch.float64), [a, b], *LRN, True)
    torch.library.opcheck(op, (torch.randn(2, 8, 4, 4), [a, b], *LRN, True, None))
    torch.library.opcheck(op, (torch.randn(2, 8, 4, 4), [a, b], 3, 0.5, 0.5, 1.0, False,
                               [torch.randn(3), torch.randn(5)]))
