"""What the benchmarks compare, for one inception module or the whole network.

- ``eager``: the reference module.
- ``compile``: torch.compile of the reference (default mode); on GPU also
  ``compile-max-autotune`` (mode "max-autotune-no-cudagraphs").
- ``fused-<backend>``: FusedInception / FusedGoogLeNet with that backend.
- ``conv-floor``: the module's convolutions alone (cuDNN / oneDNN, the 1×1s merged), the cost of
  doing nothing but the arithmetic that cannot be fused away.
- the CPU peers of peers.py: ``onnxruntime``, ``openvino`` and ``compile-freeze``, each checked
  against the reference before it is timed.

The module is the seed's (Inception, GoogLeNet) or torchvision's (its GoogLeNet or one of its
blocks), in eval mode.
"""
import copy
import importlib

import pytest
import torch
import torch.nn.functional as F

import peers
from googlenet_fused import FusedGoogLeNet, FusedInception, backends, fuse
from googlenet_fused import torchvision_googlenet as tv
from googlenet_fused.reference import INCEPTION_CONFIGS, GoogLeNet, Inception


def torchvision_model(block=None):
    """torchvision's GoogLeNet (1000 classes, no auxiliary heads) or one of its blocks (a name
    of INCEPTION_CONFIGS): random weights, BatchNorm statistics randomized (means in
    [-0.5, 0.5), variances in [0.5, 1.5): a folding that ignored them would show), eval mode.
    Needs torchvision."""
    # the module: torchvision.models.googlenet as an attribute is its builder function
    googlenet = importlib.import_module("torchvision.models.googlenet")

    if block is None:
        model = googlenet.GoogLeNet(aux_logits=False, init_weights=False)
    else:
        model = googlenet.Inception(*INCEPTION_CONFIGS[block])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model.eval()


def fused_backends(x):
    return [b for b in ("triton", "native") if not backends.not_supported_reasons(b, x)]


def conv_floor_inception(module: Inception):
    w = torch.cat([module.case1[0].weight, module.case2[0].weight, module.case3[0].weight])
    b = torch.cat([module.case1[0].bias, module.case2[0].bias, module.case3[0].bias])
    c1, c3r = module.case1[0].out_channels, module.case2[0].out_channels
    conv3, conv5, proj = module.case2[3], module.case3[3], module.case4[1]

    def run(x):
        z = F.conv2d(x, w, b)
        F.conv2d(z.narrow(1, c1, c3r), conv3.weight, conv3.bias, padding=1)
        F.conv2d(z.narrow(1, c1 + c3r, z.shape[1] - c1 - c3r), conv5.weight, conv5.bias,
                 padding=2)
        return F.conv2d(x, proj.weight, proj.bias)
    return run


def _runs(name, fn):
    """``fn``, once it has run; skipped where PyTorch has no kernel for the input (eager
    LocalResponseNorm in bf16 on CPU: ATen's avg_pool3d has none)."""
    try:
        fn()
    except NotImplementedError as exc:
        pytest.skip(f"{name}: {exc}")
    return fn


def make_provider(name, module, x):
    """A zero-argument callable for provider ``name`` on input ``x``."""
    if name == "eager":
        return _runs(name, lambda: module(x))
    if name == "compile":
        torch._dynamo.reset()
        compiled = torch.compile(module)
        return lambda: compiled(x)
    if name == "compile-max-autotune":
        torch._dynamo.reset()
        compiled = torch.compile(module, mode="max-autotune-no-cudagraphs")
        return lambda: compiled(x)
    if name.startswith("fused-"):
        backend = name.split("-", 1)[1]
        if isinstance(module, Inception):
            fused = FusedInception.from_module(module, backend=backend)
        elif isinstance(module, GoogLeNet):
            fused = FusedGoogLeNet(module.image_shape, module.fc[1].out_features, backend=backend)
            fused.load_state_dict(module.state_dict())
            fused.to(x.device, x.dtype).eval()
        elif tv.is_inception(module):  # torchvision's block: fused on a copy
            fused = tv.FusedTorchvisionInception.from_module(copy.deepcopy(module), backend)
        else:  # torchvision's GoogLeNet: fused in place, so on a copy
            fused = fuse(copy.deepcopy(module), backend)
        return lambda: fused(x)
    if name in peers.PEERS:
        reason = peers.missing(name, x.dtype) or (
            "a CPU runtime" if x.device.type != "cpu" else None)
        if reason:
            pytest.skip(f"{name}: {reason}")
        run = peers.runtime(name, module, x)
        peers.check_against(name, run(), module, x)
        return run
    if name == "conv-floor":
        if type(module) is Inception:
            floor = conv_floor_inception(module)
            return lambda: floor(x)
        return None
    raise ValueError(name)
