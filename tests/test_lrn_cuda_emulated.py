"""The CUDA kernel of lrn_relu_concat, run on CPU: the op _lrn_relu_concat_cuda_emulated_into
calls the kernel's own per-thread function (csrc/lrn_relu_concat_thread.h) for every block and
thread of the launch the CUDA path would make, so its indexing, vector conditions and tables
are checked here against the reference, without a GPU."""
import pytest
import torch
import torch.nn.functional as F

from googlenet_fused import ops
from helpers import assert_matches, check_backward, make_inputs as make, plain_lowp

pytestmark = pytest.mark.skipif(not ops.extension_available(), reason="extension not built")
LRN = (5, 1e-3, 0.75, 2.0)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def emulated(branches, lrn=LRN, relu=True, out=None, bias=None):
    if out is None:
        first = branches[0]
        out = first.new_empty(first.shape[0], sum(b.shape[1] for b in branches),
                              *first.shape[2:]).contiguous(
            memory_format=ops._output_layout(first))
    torch.ops.googlenet_fused._lrn_relu_concat_cuda_emulated_into(out, branches, *lrn, relu, bias)
    return out


def reference(branches, size=5, alpha=1e-3, beta=0.75, k=2.0, relu=True):
    act = F.relu if relu else (lambda t: t)
    return torch.cat([act(F.local_response_norm(b, size, alpha, beta, k)) for b in branches], 1)


def check(branches, lrn=LRN, relu=True, out=None):
    got = emulated(branches, lrn, relu, out)
    lowp = None
    if branches[0].dtype in (torch.float16, torch.bfloat16):
        lowp = plain_lowp(lambda bs, *a: reference(bs, *a, relu=relu), branches, *lrn)
    assert_matches(got, reference([b.double() for b in branches], *lrn, relu=relu), lowp,
                   what=f"emulated {[tuple(b.shape) for b in branches]} {branches[0].dtype}")
    return got


# Channel counts: 4a's and 3b's (multiples of 8: the 16-byte path), odd ones (scalar tails and
# misaligned slices), fewer channels than a chunk, and more than eight branches (two launches).
CHANNEL_SETS = [(192, 208, 48, 64), (128, 192, 96, 64), (1,), (2, 3), (13, 8, 7, 24),
                tuple(range(1, 11))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("channels", CHANNEL_SETS)
@pytest.mark.parametrize("n, hw", [(1, (1, 1)), (3, (5, 7)), (2, (14, 14))])
def test_emulated_launch_matches_reference(dtype, layout, channels, n, hw):
    check(make([(n, c, *hw) for c in channels], dtype, layout))


@pytest.mark.parametrize("lrn", [(1, 1e-3, 0.75, 2.0), (3, 0.5, 0.5, 1.0), (4, 2.0, 1.3, 0.5),
                                 (5, 1e-4, 0.6, 1.0), (7, 1e-4, 0.75, 1.0)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("relu", [True, False])
def test_emulated_other_windows_and_plain_lrn(lrn, layout, relu):
    check(make([(2, 16, 3, 4), (2, 5, 3, 4)], layout=layout), lrn, relu)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("lrn", [LRN, (3, 0.5, 0.5, 1.0)])
def test_emulated_bias(dtype, layout, lrn):
    branches = make([(2, 16, 3, 5), (2, 7, 3, 5)], dtype, layout)
    wide = torch.randn(40).to(dtype)
    biases = [wide[:16], wide[17:24]]  # the second one misaligned: scalar bias loads
    got = emulated(branches, lrn, bias=biases)
    ref = reference([b.double() + c.double().view(1, -1, 1, 1) for b, c in zip(branches, biases)],
                    *lrn)
    lowp = None
    if dtype in (torch.float16, torch.bfloat16):
        lowp = plain_lowp(lambda ts, *a: reference(
            [ts[0] + ts[2].view(1, -1, 1, 1), ts[1] + ts[3].view(1, -1, 1, 1)], *a),
            branches + biases, *lrn)
    assert_matches(got, ref, lowp, what=f"emulated bias {dtype} {layout}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("start", [0, 3, 8])
def test_emulated_into_channel_slice(dtype, layout, start):
    branches = make([(2, 16, 4, 3), (2, 9, 4, 3)], dtype, layout)
    big = torch.full((2, 40, 4, 3), 1234.0, dtype=dtype)
    if layout == "channels_last":
        big = big.contiguous(memory_format=torch.channels_last)
    check(branches, out=big[:, start:start + 25])
    assert (big[:, :start] == 1234).all() and (big[:, start + 25:] == 1234).all()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_emulated_misaligned_base_pointers(layout):
    # A channels_last tensor viewed one element in: 16-byte loads would fault; scalar path.
    wide = make([(2, 17, 5, 5)], layout=layout)[0]
    check([wide[:, 1:], wide[:, :8]])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_emulated_nan_and_inf(layout):
    branches = make([(2, 16, 4, 4), (2, 5, 4, 4)], layout=layout)
    branches[0][0, 3, 1, 1] = float("nan")
    branches[0][1, 9, 2, 2] = float("inf")
    branches[1][1, 4, 0, 0] = float("-inf")
    got = emulated(branches)
    ref = reference(branches)
    assert torch.equal(torch.isnan(got), torch.isnan(ref)) and torch.isnan(got).any()
    torch.testing.assert_close(got, ref, equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_emulated_int64_offsets():
    # An output whose offsets pass 2^31 elements takes the int64 instantiation. 4 GiB of
    # address space, of which only the few pages written are touched.
    x = make([(2, 16, 2, 3)], torch.float16, "channels_last")[0]
    big = torch.empty((1 << 31) + 256, dtype=torch.float16)
    out = torch.as_strided(big, (2, 16, 2, 3), (1 << 31, 1, 48, 16))
    got = check([x], out=out)
    assert got.data_ptr() == big.data_ptr()


# ------------------------------------------------------------------------------- backward
BACKWARD = torch.ops.googlenet_fused._lrn_relu_concat_backward_cuda_emulated


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("channels", CHANNEL_SETS)
@pytest.mark.parametrize("n, hw", [(1, (1, 1)), (3, (5, 7))])
def test_emulated_backward_matches_the_aten_formula(dtype, layout, channels, n, hw):
    branches = make([(n, c, *hw) for c in channels], dtype, layout)
    grad_out = make([(n, sum(channels), *hw)], dtype, layout)[0]
    check_backward(BACKWARD, grad_out, branches)


@pytest.mark.parametrize("lrn", [(1, 1e-3, 0.75, 2.0), (3, 0.5, 0.5, 1.0), (4, 2.0, 1.3, 0.5),
                                 (5, 1e-4, 0.6, 1.0), (7, 1e-4, 0.75, 1.0)])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_emulated_backward_other_lrn_bias_and_grad_layouts(lrn, relu, layout):
    branches = make([(2, 9, 4, 3), (2, 3, 4, 3)], torch.float64, layout)
    bias = [torch.randn(9, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    wide = torch.randn(2, 20, 4, 3, dtype=torch.float64)
    for grad_out in (wide[:, 4:16], torch.ones((), dtype=torch.float64).expand(2, 12, 4, 3)):
        check_backward(BACKWARD, grad_out, branches, lrn, relu, bias)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("first", [0, 8, 3], ids=["aligned", "aligned-offset", "misaligned"])
def test_emulated_backward_into_channel_slices(dtype, layout, first):
    """The inception backward's use: the gradients are channel slices of one tensor (the
    merged 1×1s' pre-activation gradient), vector stores only where a slice stays aligned;
    the channels around them are untouched."""
    into = torch.ops.googlenet_fused._lrn_relu_concat_backward_cuda_emulated_into
    channels = (192, 96, 16)
    branches = make([(2, c, 3, 5) for c in channels], dtype, layout)
    grad_out = make([(2, sum(channels), 3, 5)], dtype, layout)[0]
    whole = make([(2, first + sum(channels) + 5, 3, 5)], dtype, layout)[0]
    before = whole.clone()
    end = first + sum(channels)

    def op(grad_out, branches, *args):
        grads = list(whole[:, first:end].split(channels, 1))
        into(grads, grad_out, branches, *args)
        return grads

    check_backward(op, grad_out, branches)
    assert torch.equal(whole[:, :first], before[:, :first])
    assert torch.equal(whole[:, end:], before[:, end:])
