"""Shared set-up of the benchmark suites: providers, synchronized timing, extra_info."""
import gc
import os
import platform

import pytest
import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "0")

DEVICE = "cuda" if ON_GPU else "cpu"
DEVICE_NAME = torch.cuda.get_device_name() if ON_GPU else (platform.processor() or "CPU")


def env_list(name, default):
    """A comma-separated BENCH_* variable (empty: nothing), else ``default``."""
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [v.strip() for v in value.split(",") if v.strip()]


# What a run covers; each BENCH_* variable narrows it (e.g. BENCH_DTYPES=bf16).
BATCHES = [int(b) for b in env_list("BENCH_BATCHES", [1, 32, 256] if ON_GPU else [1, 16])]
ALL_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPES = {d: ALL_DTYPES[d]
          for d in env_list("BENCH_DTYPES", ALL_DTYPES if ON_GPU else ["fp32", "bf16"])}
LAYOUTS = env_list("BENCH_LAYOUTS", ["nchw", "channels_last"])


def versions():
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(torch=torch.__version__, triton=triton_version,
                cuda=torch.version.cuda if ON_GPU else None, device_name=DEVICE_NAME,
                cpu_threads=torch.get_num_threads())


def run_benchmark(benchmark, fn, info):
    """Time ``fn`` (synchronizing on GPU, so no asynchronous launch is timed) and record info."""
    def call():
        fn()
        if ON_GPU:
            torch.cuda.synchronize()

    # warm-up: autotuning, compilation, oneDNN / cuDNN plan creation (once is enough for a
    # smoke run with --benchmark-disable, which calls fn once more)
    for _ in range(1 if benchmark.disabled else 3):
        call()
    benchmark.extra_info.update(info, **versions())
    rounds = int(os.environ.get("BENCH_ROUNDS", 20 if ON_GPU else 11))
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)
    stats = benchmark.stats.stats if benchmark.stats else None
    if stats is not None and info.get("macs"):
        benchmark.extra_info["gflops"] = 2 * info["macs"] / stats.median / 1e9


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(autouse=True)
def _release_compiled():
    """After each benchmark, drop what torch.compile keeps (dynamo's caches hold the compiled
    graphs, the model and their buffers): on the 23 GB development VM, a network training step
    measured right after the compile provider took 852 ms against 490-530 ms in a run without it
    (memory pressure; every later row was slowed too)."""
    yield
    torch._dynamo.reset()
    gc.collect()
