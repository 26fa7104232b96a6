"""The CPU runtimes a user would pick instead of this project, as benchmark providers.

- ``onnxruntime``: ONNX Runtime's CPU provider on an ONNX graph of the reference model.
- ``openvino``: OpenVINO's CPU plugin on the same graph, its precision hint the row's dtype
  (f32 or bf16: OpenVINO runs an fp32 graph in bf16 where the CPU has it).
- ``compile-freeze``: torch.compile with inductor's freezing (weights prepacked for oneDNN,
  bias and ReLU as its post-ops), what PyTorch offers for CPU inference.

The ONNX graph is written here from the reference modules, node by node, with **native LRN
nodes** (the best case for a runtime: no LRN composite), for the seed's Inception and GoogLeNet
and for torchvision's GoogLeNet and its blocks (BatchNorm as BatchNormalization nodes, which
both runtimes fold). ``onnx_model`` checks nothing; the benchmark's setup compares each
runtime's output with the reference before timing it (``check_against``).

Each runtime gets as many threads as torch has. Providers are timed in blocks (one benchmark
after another), never interleaved call by call: torch's OpenMP workers keep spinning for a while
after an op and would steal the cores from the next runtime's thread pool.
"""
from __future__ import annotations

import os
import tempfile

import torch
import torch.nn as nn

from googlenet_fused import torchvision_googlenet as tv
from googlenet_fused.reference import GoogLeNet, Inception

PEERS = ("onnxruntime", "openvino", "compile-freeze")
OPSET = 17


def missing(provider: str, dtype: torch.dtype) -> str | None:
    """Why ``provider`` cannot run here in ``dtype`` (a skip reason), or None."""
    if provider == "compile-freeze":
        return None
    if provider == "onnxruntime" and dtype != torch.float32:
        return "ONNX Runtime has no bf16 / fp16 CPU kernels for this graph"
    if provider == "openvino" and dtype not in (torch.float32, torch.bfloat16):
        return "OpenVINO's CPU plugin takes f32 or bf16 as its precision hint"
    for package in ("onnx", provider):
        try:
            __import__(package)
        except ImportError as exc:
            return f"{package} is not installed ({exc}); `make bench` installs the peers"
    return None


# ------------------------------------------------------------------------------- the graph
class _Graph:
    """Nodes and initializers of an ONNX graph, named as they are added."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def name(self, prefix):
        return f"{prefix}_{len(self.nodes) + len(self.initializers)}"

    def const(self, tensor: torch.Tensor, prefix="w"):
        from onnx import numpy_helper

        name = self.name(prefix)
        array = tensor.detach().to(torch.float32, memory_format=torch.contiguous_format)
        self.initializers.append(numpy_helper.from_array(array.cpu().numpy(), name))
        return name

    def node(self, op, inputs, **attrs):
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out


def _pair(value):
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


def _conv(g, conv: nn.Conv2d, x):
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise NotImplementedError(f"onnx_model: {conv} (only explicit zero padding)")
    ph, pw = _pair(conv.padding)
    inputs = [x, g.const(conv.weight)] + ([g.const(conv.bias, "b")] if conv.bias is not None
                                          else [])
    return g.node("Conv", inputs, kernel_shape=_pair(conv.kernel_size),
                  strides=_pair(conv.stride), dilations=_pair(conv.dilation),
                  pads=[ph, pw, ph, pw], group=conv.groups)


def _emit(g, m: nn.Module, x):
    """The ONNX nodes of module ``m`` applied to ``x`` (eval mode); returns the output name."""
    if isinstance(m, nn.Sequential):
        for child in m:
            x = _emit(g, child, x)
        return x
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return x
    if type(m) is nn.Conv2d:
        return _conv(g, m, x)
    if type(m) is nn.ReLU:
        return g.node("Relu", [x])
    if type(m) is nn.LocalResponseNorm:  # ONNX's LRN: alpha / size · Σ x², as PyTorch's
        return g.node("LRN", [x], size=m.size, alpha=m.alpha, beta=m.beta, bias=m.k)
    if type(m) is nn.MaxPool2d:
        ph, pw = _pair(m.padding)
        return g.node("MaxPool", [x], kernel_shape=_pair(m.kernel_size),
                      strides=_pair(m.stride), pads=[ph, pw, ph, pw],
                      dilations=_pair(m.dilation), ceil_mode=int(m.ceil_mode))
    if type(m) is nn.BatchNorm2d:
        return g.node("BatchNormalization",
                      [x, g.const(m.weight), g.const(m.bias, "b"), g.const(m.running_mean, "mean"),
                       g.const(m.running_var, "var")], epsilon=m.eps)
    if type(m) is nn.AdaptiveAvgPool2d and _pair(m.output_size) == [1, 1]:
        return g.node("GlobalAveragePool", [x])
    if type(m) is nn.Linear:
        return g.node("Gemm", [g.node("Flatten", [x], axis=1), g.const(m.weight),
                               g.const(m.bias, "b")], transB=1)
    if type(m) is Inception:
        return g.node("Concat", [_emit(g, b, x) for b in (m.case1, m.case2, m.case3, m.case4)],
                      axis=1)
    if tv.is_basic_conv(m):
        return g.node("Relu", [_emit(g, m.bn, _conv(g, m.conv, x))])
    if tv.is_inception(m):
        return g.node("Concat", [_emit(g, b, x) for b in (m.branch1, m.branch2, m.branch3,
                                                          m.branch4)], axis=1)
    if type(m) is GoogLeNet:
        for part in (m.prev, m._1st_phase, m._2nd_phase, m._3rd_phase, m.fc):
            x = _emit(g, part, x)
        return x
    if tv.is_googlenet(m):
        if m.transform_input:  # torchvision's: x_c · (std_c / 0.5) + (mean_c - 0.5) / 0.5
            std, mean = torch.tensor([0.229, 0.224, 0.225]), torch.tensor([0.485, 0.456, 0.406])
            x = g.node("Add", [g.node("Mul", [x, g.const((std / 0.5).view(1, 3, 1, 1))]),
                               g.const(((mean - 0.5) / 0.5).view(1, 3, 1, 1))])
        for name in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
                     "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
                     "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b",
                     "avgpool", "fc"):
            x = _emit(g, getattr(m, name), x)
        return x
    raise NotImplementedError(f"onnx_model: no ONNX form for {type(m).__name__}")


def onnx_model(module: nn.Module, channels: int):
    """An ONNX ModelProto of the reference ``module`` (eval mode, fp32) for inputs
    [N, channels, H, W] of any N, H, W."""
    from onnx import TensorProto, helper

    g = _Graph()
    out = _emit(g, module, "x")
    network = type(module) is GoogLeNet or tv.is_googlenet(module)  # logits, else a feature map
    graph = helper.make_graph(
        g.nodes, "googlenet_fused_peer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, "H", "W"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "classes"] if network
                                       else ["N", "C", "H_out", "W_out"])], g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="googlenet_fused benchmarks")


# ------------------------------------------------------------------------------- runtimes
def _threads() -> int:
    return torch.get_num_threads()


def openvino_model(module: nn.Module, x: torch.Tensor, **config):
    """OpenVINO's CPU plugin compiling ``module``'s ONNX graph for inputs like ``x`` (its
    dtype as the precision hint), latency mode on this process's thread count; ``config``
    adds plugin properties (e.g. PERF_COUNT="YES")."""
    import openvino as ov

    hint = {torch.float32: "f32", torch.bfloat16: "bf16"}[x.dtype]
    with tempfile.TemporaryDirectory() as folder:  # read_model takes ONNX from a file
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as f:
            f.write(onnx_model(module, x.shape[1]).SerializeToString())
        return ov.Core().compile_model(path, "CPU", {
            "INFERENCE_NUM_THREADS": str(_threads()), "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY", **config})


def runtime(provider: str, module: nn.Module, x: torch.Tensor):
    """A callable running ``module`` (the reference, eval) on ``x`` through ``provider``;
    returns the output as a torch tensor."""
    if provider == "compile-freeze":
        torch._dynamo.reset()
        compiled = torch.compile(module)
        with torch._inductor.config.patch(freezing=True), torch.no_grad():
            compiled(x)  # freezing is decided when the graph compiles, on this first call
        return lambda: compiled(x)
    data = x.detach().float().contiguous().numpy()
    if provider == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        options.inter_op_num_threads = 1
        graph = onnx_model(module, x.shape[1]).SerializeToString()
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        return lambda: torch.from_numpy(session.run(None, {"x": data})[0])
    if provider == "openvino":
        request = openvino_model(module, x).create_infer_request()

        def run():
            request.infer({0: data})
            return torch.from_numpy(request.get_output_tensor(0).data.copy())
        return run
    raise ValueError(provider)


def check_against(provider: str, out: torch.Tensor, module: nn.Module, x: torch.Tensor):
    """Raise AssertionError unless ``out`` (a runtime's output) matches ``module`` on ``x``:
    against float64, within what its precision allows (bf16: 3 % of the output's range)."""
    import copy

    with torch.no_grad():
        ref = copy.deepcopy(module).double()(x.double())
    err = (out.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    allowed = (1e-4 if x.dtype == torch.float32 else 3e-2) * scale + 1e-6
    assert err <= allowed, (f"{provider}: max error {err:.3e} against the reference, more than "
                            f"{allowed:.3e} ({x.dtype}, output range {scale:.3e})")
