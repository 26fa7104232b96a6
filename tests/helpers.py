"""Shared checks: accuracy judged against float64, with low-precision PyTorch as the yardstick."""
import contextlib

import torch

FP32_TOL = dict(rtol=1e-5, atol=1e-5)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_matches(out: torch.Tensor, ref64: torch.Tensor, torch_lowp: torch.Tensor | None = None,
                   what: str = ""):
    """``out`` vs the float64 reference. fp32/fp64: tight. fp16/bf16: no worse than twice plain
    PyTorch's own error in that dtype (``torch_lowp``), plus a small floor. NaN never passes
    unless the reference has NaN at the same places."""
    assert out.shape == ref64.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    nan_out, nan_ref = torch.isnan(out), torch.isnan(ref64)
    assert torch.equal(nan_out, nan_ref), (
        f"{what}: NaN at {int((nan_out != nan_ref).sum())} places where the reference differs")
    out, ref64 = out[~nan_out], ref64[~nan_ref]
    if out.dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(out.double(), ref64, **FP32_TOL, msg=lambda m: f"{what}: {m}")
        return
    assert torch_lowp is not None, "low-precision outputs need plain PyTorch's error as yardstick"
    allowed = 2 * max_error(torch_lowp[~nan_ref], ref64) + 1e-3 * ref64.abs().max().item() + 1e-6
    err = max_error(out, ref64)
    assert err <= allowed, f"{what}: max error {err:.3e} > allowed {allowed:.3e} ({out.dtype})"


def plain_lowp(fn, inputs, *args):
    """Plain PyTorch's result in the inputs' low precision: the yardstick for fp16/bf16. Where
    ATen has no such kernel (LRN's avg_pool3d in fp16 on CPU), the fp32 result rounded to the
    dtype stands in."""
    try:
        return fn(inputs, *args)
    except (NotImplementedError, RuntimeError):
        dtype = inputs[0].dtype
        result = fn([t.float() for t in inputs], *args)
        if isinstance(result, torch.Tensor):
            return result.to(dtype)
        return [t.to(dtype) for t in result]


def make_inputs(shape_list, dtype=torch.float32, layout="nchw", device="cpu", scale=3.0):
    """Random tensors of the given shapes in layout "nchw", "channels_last" or "strided"
    (every other column of a wider tensor)."""
    out = []
    for shape in shape_list:
        t = scale * torch.randn(shape, dtype=torch.float32, device=device)
        t = t.to(dtype)
        if layout == "channels_last":
            t = t.contiguous(memory_format=torch.channels_last)
        elif layout == "strided":  # non-contiguous: every other column of a wider tensor
            wide = torch.zeros(*shape[:3], 2 * shape[3], dtype=dtype, device=device)
            wide[..., ::2] = t
            t = wide[..., ::2]
        out.append(t)
    return out


LRN = (5, 1e-3, 0.75, 2.0)


def backward_reference(grad_out, branches, lrn=LRN, relu=True, bias=None):
    """The ATen formula of lrn.py, per branch, in float64."""
    from googlenet_fused import ops
    from googlenet_fused.lrn import lrn_relu_backward

    grads, offset = [], 0
    for i, b in enumerate(branches):
        a = b.double() + (bias[i].double().view(1, -1, 1, 1) if bias else 0)
        y = ops.lrn_relu_concat([a], *lrn, relu=relu)
        g = grad_out.narrow(1, offset, b.shape[1]).double()
        grads.append(lrn_relu_backward(g, a, y, *lrn, relu=relu))
        offset += b.shape[1]
    return grads


def check_backward(op, grad_out, branches, lrn=LRN, relu=True, bias=None):
    """``op`` (the extension's lrn_relu_concat_backward or its CUDA emulation) against the
    ATen formula in float64, with the fp32 formula rounded to fp16/bf16 as the yardstick."""
    got = op(grad_out, branches, *lrn, relu, bias)
    expected = backward_reference(grad_out, branches, lrn, relu, bias)
    for i, (g, e, b) in enumerate(zip(got, expected, branches)):
        assert g.shape == b.shape and g.dtype == b.dtype
        lowp = None
        if b.dtype in (torch.float16, torch.bfloat16):  # plain PyTorch's formula in fp32, rounded
            lowp = backward_reference(grad_out.float(), [b.float()], lrn, relu,
                                      None if bias is None else [bias[i].float()])[0].to(b.dtype)
        assert_matches(g, e, lowp, what=f"backward branch {i} {tuple(b.shape)} {b.dtype}")
    return got


@contextlib.contextmanager
def fp32_precision(value: str):
    """Convolutions and matmuls in fp32 at ``value`` ("ieee" or "tf32") through torch's
    fp32_precision API (never the legacy allow_tf32 flags: torch refuses to mix the two)."""
    settings = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    saved = [s.fp32_precision for s in settings]
    try:
        for s in settings:
            s.fp32_precision = value
        yield
    finally:
        for s, v in zip(settings, saved):
            s.fp32_precision = v
