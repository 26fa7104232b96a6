"""benchmarks/peers.py: the ONNX graph the CPU runtimes run is the reference model, LRN nodes
and all, for the seed's and torchvision's GoogLeNet and their blocks; each runtime's output
matches the reference."""
import copy
import os
import sys

import pytest
import torch
import torch.nn as nn

from googlenet_fused import INCEPTION_CONFIGS, GoogLeNet, Inception

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import peers  # noqa: E402

pytest.importorskip("onnx")


def _torchvision(block=None, **kwargs):
    googlenet = pytest.importorskip("torchvision.models.googlenet")
    model = (googlenet.GoogLeNet(num_classes=10, init_weights=False, **kwargs) if block is None
             else googlenet.Inception(*block))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.2, 4)
                m.weight.uniform_(-2, 2)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


MODELS = {
    "seed 4b": (lambda: Inception(*INCEPTION_CONFIGS["4b"]).eval(), (2, 512, 9, 9)),
    "seed network": (lambda: GoogLeNet((3, 64, 64)).eval(), (2, 3, 64, 70)),
    "torchvision 4c": (lambda: _torchvision(INCEPTION_CONFIGS["4c"]), (2, 512, 9, 9)),
    "torchvision network": (lambda: _torchvision(aux_logits=False, transform_input=True),
                            (2, 3, 67, 64)),
}


def test_graph_has_native_lrn_nodes_and_every_layer():
    onnx = pytest.importorskip("onnx")
    model = peers.onnx_model(GoogLeNet((3, 64, 64)).eval(), 3)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    # 2 in the stem and 4 per branch-chain of each of the nine modules: 6 per module
    assert ops.count("LRN") == 2 + 9 * 6 and ops.count("Concat") == 9
    assert ops.count("Conv") == 3 + 9 * 6 and "Pow" not in ops and "AveragePool" not in ops
    lrn = next(n for n in model.graph.node if n.op_type == "LRN")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lrn.attribute}
    assert attrs["size"] == 5 and attrs["bias"] == 2.0 and attrs["beta"] == pytest.approx(0.75)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("provider", ["onnxruntime", "openvino"])
def test_runtime_matches_the_reference(provider, name):
    reason = peers.missing(provider, torch.float32)
    if reason:
        pytest.skip(reason)
    make, shape = MODELS[name]
    torch.manual_seed(0)
    module = make()
    x = torch.randn(shape)
    out = peers.runtime(provider, module, x)()
    peers.check_against(provider, out, module, x)
    with pytest.raises(AssertionError, match=f"{provider}: max error"):  # the check can fail
        peers.check_against(provider, out + 1e-2 * out.abs().max(), module, x)


def test_openvino_bf16_hint_is_checked_against_float64():
    if peers.missing("openvino", torch.bfloat16):
        pytest.skip(peers.missing("openvino", torch.bfloat16))
    module = Inception(*INCEPTION_CONFIGS["5a"]).eval()
    x = torch.randn(1, 832, 7, 7).to(torch.bfloat16)
    out = peers.runtime("openvino", copy.deepcopy(module).to(torch.bfloat16), x)()
    peers.check_against("openvino", out, module.to(torch.bfloat16), x)


def test_missing_says_why():
    assert "bf16" in peers.missing("onnxruntime", torch.bfloat16)
    assert peers.missing("compile-freeze", torch.bfloat16) is None


@pytest.mark.slow
@pytest.mark.parametrize("network", ["seed", "torchvision"])
def test_layer_by_layer_comparison_runs(network):
    """benchmarks/layers.py: both sides profiled on the same model, their convolutions found."""
    pytest.importorskip("openvino")
    if network == "torchvision":
        pytest.importorskip("torchvision")
    import layers

    text = layers.report(network, batch=1, dtype="fp32", runs=1)
    assert text.startswith(f"## {network} GoogLeNet, batch 1, fp32")
    row = next(line for line in text.splitlines() if line.startswith("| convolutions |"))
    openvino_ms, fused_ms = float(row.split("|")[2]), float(row.split("|")[4])
    assert openvino_ms > 0 and fused_ms > 0
    primitives = text.split("OpenVINO's convolution primitives (per inference): ")[1]
    assert primitives.strip(), "OpenVINO reported no convolution primitive"
