"""Per-module and whole-network speed: eager vs torch.compile vs fused vs the convolution floor.

Run: pytest benchmarks --benchmark-json=results.json, then python benchmarks/report.py.
Test ids read module-batch-dtype-layout-provider (e.g. 4a-16-fp32-nchw-eager) and
batch-dtype-layout-provider for the network. Select with -k (e.g. -k "4a and fp16") or narrow
with comma-separated variables: BENCH_MODULES (3a,4a,5b), BENCH_BATCHES, BENCH_NET_BATCHES
(empty: no network rows), BENCH_DTYPES (fp32,fp16,bf16), BENCH_LAYOUTS (nchw,channels_last),
BENCH_PROVIDERS (eager,compile,compile-max-autotune,fused-triton,fused-native,conv-floor),
BENCH_TRAIN_BATCHES, BENCH_TRAIN_MODULES and BENCH_TRAIN_MODULE_BATCHES (training-step rows;
empty: none), BENCH_ROUNDS.
"""
import pytest
import torch

from conftest import BATCHES, DEVICE, DTYPES, LAYOUTS, ON_GPU, env_list, run_benchmark
from googlenet_fused import FusedInception, fuse
from googlenet_fused.reference import INCEPTION_CONFIGS, SPATIAL_AT_224, GoogLeNet, Inception
from googlenet_fused.summary import count_macs
from providers import fused_backends, make_provider

MODULES = env_list("BENCH_MODULES", INCEPTION_CONFIGS)
# max-autotune exists on GPU only (on CPU it is the default compile's oneDNN convolutions).
PROVIDERS = env_list("BENCH_PROVIDERS", ["eager", "compile"]
                     + (["compile-max-autotune"] if ON_GPU else [])
                     + ["fused-triton", "fused-native", "conv-floor"])
NET_BATCHES = [int(b) for b in env_list("BENCH_NET_BATCHES", [32, 256] if ON_GPU else [1, 8])]


def _input(shape, dtype, layout):
    x = torch.randn(shape, device=DEVICE).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _skip_unavailable(provider, x):
    if provider.startswith("fused-") and provider.split("-", 1)[1] not in fused_backends(x):
        pytest.skip(f"{provider} does not support {x.device} {x.dtype}")


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
    _skip_unavailable(provider, x)
    module = Inception(*cfg).to(DEVICE, DTYPES[dtype]).eval()
    macs = batch * sum(count_macs(module, x[:1]).values())
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
    _skip_unavailable(provider, x)
    net = GoogLeNet((3, 224, 224), n_classes=1000).to(DEVICE, DTYPES[dtype]).eval()
    macs = batch * sum(count_macs(net, x[:1]).values())
    fn = make_provider(provider, net, x)
    benchmark.group = f"GoogLeNet batch {batch} {dtype} {layout}"
    run_benchmark(benchmark, fn, dict(module="network", provider=provider, batch=batch,
                                      dtype=dtype, layout=layout, macs=macs))


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
                layout="nchw", macs=3 * batch * sum(count_macs(net, x[:1]).values()))
    run_benchmark(benchmark, step, info)
    benchmark.extra_info["saved_mb"] = saved_activation_bytes(step) / 1e6
    benchmark.group = f"{name} training step batch {batch} {dtype}"
