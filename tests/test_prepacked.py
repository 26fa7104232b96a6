"""oneDNN weights prepacked for CPU inference (googlenet_fused.prepacked): used where it
applies, never stale, never where autograd or torch.compile needs the graph."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

from googlenet_fused import INCEPTION_CONFIGS, FusedInception, GoogLeNet, Inception, fuse, prepacked
from helpers import assert_matches

pytestmark = pytest.mark.skipif(not prepacked.applies(torch.zeros(1)),
                                reason="oneDNN (mkldnn) is not available in this torch build")


def pair(config=INCEPTION_CONFIGS["4a"]):
    ref = Inception(*config).eval()
    fused = FusedInception.from_module(copy.deepcopy(ref), "native")
    return ref, fused


def entries(module) -> int:
    return len(module._packs._entries)


def test_inference_runs_prepacked_and_matches_the_reference():
    ref, fused = pair()
    x = torch.randn(1, 480, 7, 7)
    with torch.no_grad():
        out = fused(x)
    assert entries(fused) == 4, "the merged 1×1s, the pool projection, the 3×3 and the 5×5"
    assert_matches(out, ref.double()(x.double()), what="prepacked 4a")
    with torch.no_grad():
        torch.testing.assert_close(fused(x), out, rtol=0, atol=0)  # packs reused: same values
    assert entries(fused) == 4


def test_each_input_shape_gets_its_own_packing():
    ref, fused = pair()
    for shape in [(1, 480, 7, 7), (3, 480, 5, 9), (1, 480, 7, 7)]:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            assert_matches(fused(x), ref.double()(x.double()), what=f"{shape}")
    assert entries(fused) == 8


@pytest.mark.parametrize("change", ["in_place", "load_state_dict", "to_double_and_back"])
def test_a_changed_weight_is_repacked(change):
    ref, fused = pair()
    x = torch.randn(2, 480, 7, 7)
    with torch.no_grad():
        fused(x)
        if change == "in_place":
            for m in (ref, fused):
                m.case2[3].weight.mul_(-2.0)  # the 3×3
                m.case1[0].bias.add_(1.0)  # inside the merged 1×1s
        elif change == "load_state_dict":
            other = Inception(*INCEPTION_CONFIGS["4a"])
            ref.load_state_dict(other.state_dict())
            fused.load_state_dict(other.state_dict())
        else:
            fused.double().float()
        assert_matches(fused(x), ref.double()(x.double()), what=change)


def test_not_used_where_gradients_are_needed():
    ref, fused = pair()
    x = torch.randn(2, 480, 7, 7, requires_grad=True)
    fused(x).sum().backward()  # eval mode, but autograd records: the op with its backward
    assert entries(fused) == 0 and x.grad is not None


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # flags() setting it
def test_mkldnn_disabled_runs_aten():
    ref, fused = pair()
    x = torch.randn(1, 480, 7, 7)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        assert_matches(fused(x), ref.double()(x.double()), what="mkldnn off")
    assert entries(fused) == 0


def test_fp16_runs_aten_when_onednn_has_no_fp16():
    if torch.ops.mkldnn._is_mkldnn_fp16_supported():
        pytest.skip("this CPU has oneDNN fp16")
    assert not prepacked.applies(torch.zeros(1, dtype=torch.float16))


def test_copies_and_pickles_start_with_no_packs():
    model = fuse(GoogLeNet((3, 64, 64), n_classes=10).eval(), "native")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert entries(model.inception_modules()["3a"]) == 4 and entries(model.prev[0]) == 1
    clone = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for m in (clone, loaded, pickle.loads(pickle.dumps(model))):
        assert entries(m.inception_modules()["3a"]) == 0
        with torch.no_grad():
            torch.testing.assert_close(m(x), out, rtol=0, atol=0)


def test_stem_keeps_nan():
    """NaN stays NaN through the prepacked stem (oneDNN's ReLU post-op would make it 0)."""
    model = fuse(GoogLeNet((3, 64, 64), n_classes=10).eval(), "native")
    ref = GoogLeNet((3, 64, 64), n_classes=10).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    x[0, 0, 5, 5] = float("nan")
    with torch.no_grad():
        y, y_ref = model.prev(x), ref.prev(x)
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref))
    assert_matches(y, ref.double().prev(x.double()), what="stem")


def test_conv_module_other_geometry_runs_aten():
    conv = nn.Conv2d(4, 6, 3, padding=(1, 0), bias=False)
    packs = prepacked.ConvPacks()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        y = prepacked.conv_module(packs, conv, x, conv.weight, None, relu=True)
        torch.testing.assert_close(y, torch.relu(conv(x)))
    assert not packs._entries


def test_nchw_input_keeps_its_layout():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    packs = prepacked.ConvPacks()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        y = prepacked.conv_module(packs, conv, x, conv.weight, conv.bias)
        assert y.is_contiguous() and not packs._entries
        y = prepacked.conv_module(packs, conv, x.contiguous(memory_format=torch.channels_last),
                                  conv.weight, conv.bias)
        assert y.is_contiguous(memory_format=torch.channels_last) and len(packs._entries) == 1
        torch.testing.assert_close(y, conv(x))
