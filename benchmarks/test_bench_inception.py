"""Per-module and whole-network speed: eager vs torch.compile vs fused vs the convolution floor.

Run: pytest benchmarks --benchmark-json=results.json, then python benchmarks/report.py.
Test ids read module-batch-dtype-layout-provider (e.g. 4a-16-fp32-nchw-eager) and
batch-dtype-layout-provider for the network. Select with -k (e.g. -k "4a and fp16") or narrow
with comma-separated variables: BENCH_MODULES (3a,4a,5b), BENCH_BATCHES, BENCH_NET_BATCHES
(empty: no network rows), BENCH_DTYPES (fp32,fp16,bf16), BENCH_LAYOUTS (nchw,channels_last),
BENCH_PROVIDERS (eager,compile,compile-max-autotune,onnxruntime,openvino,compile-freeze,
fused-triton,fused-native,conv-floor), BENCH_TV_MODULES and BENCH_TV_BATCHES (torchvision's
GoogLeNet blocks, rows "tv-3a" ..; the network is "tv-network" at BENCH_NET_BATCHES),
BENCH_TRAIN_BATCHES, BENCH_TRAIN_MODULES and BENCH_TRAIN_MODULE_BATCHES (training-step rows;
empty: none), BENCH_ROUNDS.
"""
import copy

import pytest
import torch

from conftest import BATCHES, DEVICE, DTYPES, LAYOUTS, ON_GPU, env_list, run_benchmark
from googlenet_fused import FusedInception, fuse
from googlenet_fused.reference import INCEPTION_CONFIGS, SPATIAL_AT_224, GoogLeNet, Inception
from googlenet_fused.summary import count_macs
import peers
from providers import fused_backends, make_provider, torchvision_model

MODULES = env_list("BENCH_MODULES", INCEPTION_CONFIGS)
# max-autotune exists on GPU only (on CPU it is the default compile's oneDNN convolutions); the
# CPU peers (peers.py) on CPU only.
PROVIDERS = env_list("BENCH_PROVIDERS", ["eager", "compile"]
                     + (["compile-max-autotune"] if ON_GPU else list(peers.PEERS))
                     + ["fused-triton", "fused-native", "conv-floor"])
NET_BATCHES = [int(b) for b in env_list("BENCH_NET_BATCHES", [32, 256] if ON_GPU else [1, 8])]
# torchvision's GoogLeNet (BatchNorm folded by fuse()): its blocks and the network. Empty
# BENCH_TV_MODULES / BENCH_TV_BATCHES: no such rows; without torchvision they are skipped.
TV_MODULES = env_list("BENCH_TV_MODULES", INCEPTION_CONFIGS)
TV_BATCHES = [int(b) for b in env_list("BENCH_TV_BATCHES", BATCHES)]


def _input(shape, dtype, layout):
    x = torch.randn(shape, device=DEVICE).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _macs(model, x):
    """Multiply-accumulates of ``model`` on the batch ``x``, counted in fp32 on a copy (eager
    PyTorch lacks some bf16 CPU kernels; the count does not depend on the dtype)."""
    return x.shape[0] * sum(count_macs(copy.deepcopy(model).float(), x[:1].float()).values())


def _skip_unavailable(provider, x, layout="nchw"):
    if provider.startswith("fused-") and provider.split("-", 1)[1] not in fused_backends(x):
        pytest.skip(f"{provider} does not support {x.device} {x.dtype}")
    if provider in peers.PEERS and provider != "compile-freeze" and layout != "nchw":
        pytest.skip(f"{provider} takes NCHW arrays: its channels_last row is its NCHW row")


def _torchvision_model(block=None):
    pytest.importorskip("torchvision")
    return torchvision_model(block)


# The provider varies fastest (topmost decorator): the numbers that a report divides are taken
# one right after the other, which keeps the ratios steady on a shared, drifting machine.
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("module_name", MODULES)
def test_inception(benchmark, module_name, provider, batch, dtype, layout):
    cfg, size = INCEPTION_CONFIGS[module_name], SPATIAL_AT_224[module_name]
    x = _input((batch, cfg.in_size, size, size), DTYPES[dtype], layout)
    _skip_unavailable(provider, x, layout)
    module = Inception(*cfg).to(DEVICE, DTYPES[dtype]).eval()
    macs = _macs(module, x)
    fn = make_provider(provider, module, x)
    benchmark.group = f"{module_name} batch {batch} {dtype} {layout}"
    run_benchmark(benchmark, fn, dict(module=module_name, provider=provider, batch=batch,
                                      dtype=dtype, layout=layout, macs=macs))


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "conv-floor"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", NET_BATCHES)
def test_network(benchmark, provider, batch, dtype, layout):
    x = _input((batch, 3, 224, 224), DTYPES[dtype], layout)
    _skip_unavailable(provider, x, layout)
    net = GoogLeNet((3, 224, 224), n_classes=1000).to(DEVICE, DTYPES[dtype]).eval()
    macs = _macs(net, x)
    fn = make_provider(provider, net, x)
    benchmark.group = f"GoogLeNet batch {batch} {dtype} {layout}"
    run_benchmark(benchmark, fn, dict(module="network", provider=provider, batch=batch,
                                      dtype=dtype, layout=layout, macs=macs))


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "conv-floor"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", TV_BATCHES)
@pytest.mark.parametrize("module_name", TV_MODULES)
def test_torchvision_block(benchmark, module_name, provider, batch, dtype):
    """torchvision's GoogLeNet blocks (rows "tv-3a" ..), NCHW input as torchvision's take it."""
    cfg, size = INCEPTION_CONFIGS[module_name], SPATIAL_AT_224[module_name]
    x = _input((batch, cfg.in_size, size, size), DTYPES[dtype], "nchw")
    _skip_unavailable(provider, x)
    block = _torchvision_model(module_name).to(DEVICE, DTYPES[dtype])
    macs = _macs(block, x)
    fn = make_provider(provider, block, x)
    benchmark.group = f"torchvision {module_name} batch {batch} {dtype}"
    run_benchmark(benchmark, fn, dict(module=f"tv-{module_name}", provider=provider,
                                      batch=batch, dtype=dtype, layout="nchw", macs=macs))


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "conv-floor"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", NET_BATCHES)
def test_torchvision_network(benchmark, provider, batch, dtype):
    """torchvision's GoogLeNet (row "tv-network"), 224×224, NCHW input."""
    x = _input((batch, 3, 224, 224), DTYPES[dtype], "nchw")
    _skip_unavailable(provider, x)
    net = _torchvision_model().to(DEVICE, DTYPES[dtype])
    macs = _macs(net, x)
    fn = make_provider(provider, net, x)
    benchmark.group = f"torchvision GoogLeNet batch {batch} {dtype}"
    run_benchmark(benchmark, fn, dict(module="tv-network", provider=provider, batch=batch,
                                      dtype=dtype, layout="nchw", macs=macs))


def saved_activation_bytes(step):
    """Bytes of the distinct tensors autograd saves for backward during ``step`` (its forward):
    the activation memory a training step holds at its peak, on any device."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


# Training: a step is zero_grad, forward, loss, backward (no optimizer step), each provider's
# model trained the same way; dropout stays on. Rows are named "<module>-train".
TRAIN_PROVIDERS = [p for p in PROVIDERS if p in ("eager", "compile", "fused-triton",
                                                 "fused-native")]
# (model, batch) pairs: the network at BENCH_TRAIN_BATCHES, modules BENCH_TRAIN_MODULES at
# BENCH_TRAIN_MODULE_BATCHES.
TRAIN_CASES = (
    [("network", int(b)) for b in env_list("BENCH_TRAIN_BATCHES", [128] if ON_GPU else [8])]
    + [(m, int(b)) for m in env_list("BENCH_TRAIN_MODULES", ["4a"])
       for b in env_list("BENCH_TRAIN_MODULE_BATCHES", [256] if ON_GPU else [16])])


@pytest.mark.parametrize("provider", TRAIN_PROVIDERS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name, batch", TRAIN_CASES)
def test_training(benchmark, provider, dtype, name, batch):
    if name == "network":
        x = _input((batch, 3, 224, 224), DTYPES[dtype], "nchw")
        net = GoogLeNet((3, 224, 224), n_classes=1000).to(DEVICE, DTYPES[dtype]).train()
        target = torch.randint(0, 1000, (batch,), device=DEVICE)

        def loss_of(out):
            return torch.nn.functional.cross_entropy(out, target)
    else:
        cfg, size = INCEPTION_CONFIGS[name], SPATIAL_AT_224[name]
        x = _input((batch, cfg.in_size, size, size), DTYPES[dtype], "nchw")
        net = Inception(*cfg).to(DEVICE, DTYPES[dtype]).train()

        def loss_of(out):
            return out.float().square().mean()
    _skip_unavailable(provider, x)
    if provider == "compile":
        torch._dynamo.reset()
        model = torch.compile(net)
    elif provider.startswith("fused-"):
        backend = provider.split("-", 1)[1]
        model = (fuse(net, backend=backend) if name == "network"  # what FusedGoogLeNet is
                 else FusedInception.from_module(net, backend=backend))
    else:
        model = net

    def step():
        net.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss_of(model(x)).backward()

    info = dict(module=f"{name}-train", provider=provider, batch=batch, dtype=dtype,
                layout="nchw", macs=3 * _macs(net, x))
    run_benchmark(benchmark, step, info)
    benchmark.extra_info["saved_mb"] = saved_activation_bytes(step) / 1e6
    benchmark.group = f"{name} training step batch {batch} {dtype}"
