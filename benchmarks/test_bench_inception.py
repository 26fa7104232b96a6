"""Per-module and whole-network speed: eager vs torch.compile vs fused vs the convolution floor.

Run: pytest benchmarks --benchmark-json=results.json, then python benchmarks/report.py.
Test ids read module-batch-dtype-layout-provider (e.g. 4a-16-fp32-nchw-eager) and
batch-dtype-provider for the network. Select with -k (e.g. -k "4a and fp16");
BENCH_MODULES=3a,4a,5b narrows the modules.
"""
import os

import pytest
import torch

from conftest import BATCHES, DEVICE, DTYPES, LAYOUTS, ON_GPU, run_benchmark
from googlenet_fused.reference import INCEPTION_CONFIGS, SPATIAL_AT_224, GoogLeNet, Inception
from googlenet_fused.summary import count_macs
from providers import fused_backends, make_provider

MODULES = os.environ.get("BENCH_MODULES", ",".join(INCEPTION_CONFIGS)).split(",")
PROVIDERS = ["eager", "compile", "fused-triton", "fused-native", "conv-floor"]
if ON_GPU and os.environ.get("BENCH_MAX_AUTOTUNE", "1") == "1":
    PROVIDERS.insert(2, "compile-max-autotune")
NET_BATCHES = [int(b) for b in os.environ.get("BENCH_NET_BATCHES",
                                               "32,256" if ON_GPU else "1,8").split(",")]


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
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", NET_BATCHES)
def test_network(benchmark, provider, batch, dtype):
    x = _input((batch, 3, 224, 224), DTYPES[dtype], "nchw")
    _skip_unavailable(provider, x)
    net = GoogLeNet((3, 224, 224), n_classes=1000).to(DEVICE, DTYPES[dtype]).eval()
    macs = batch * sum(count_macs(net, x[:1]).values())
    fn = make_provider(provider, net, x)
    benchmark.group = f"GoogLeNet batch {batch} {dtype}"
    run_benchmark(benchmark, fn, dict(module="network", provider=provider, batch=batch,
                                      dtype=dtype, layout="nchw", macs=macs))
