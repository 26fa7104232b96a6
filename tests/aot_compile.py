"""Compile the Triton kernels for the H200 (sm_90) without a GPU, exactly as the launcher would
specialize them; print one JSON row per compiled variant.

    python tests/aot_compile.py --out DIR

For the nine inception modules at batch 1, 32 and 256, channels_last, in fp32 / fp16 / bf16, the
triton backend's own forward (inception_op.module_forward with TritonSteps: reductions_1x1 with
the pool projection folded in, conv_lrn_relu for the 3×3 and 5×5 branches) runs for inference
and for training on CPU tensors, the kernel swapped for a recorder; each recorded launch is bound by Triton's own binder (the same specialization: "== 1",
"divisible by 16", pointer alignment) and compiled for every config of its autotune list that
the launch admits (tiling.usable: dtype, K step and what the launch stores).
Each distinct variant is compiled once, by a pool of processes (``--jobs``, default one per
core; GF_CODEGEN_JOBS sets it from the test); its PTX and cubin go to DIR, named by kernel,
dtype, config and the first module and batch that use it; the JSON rows name the files.
Run in its own process: the tests use the interpreter (TRITON_INTERPRET=1), whose functions
cannot be compiled for a GPU.
"""
import argparse
import json
import multiprocessing
import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

from googlenet_fused.inception_op import TritonSteps, module_forward  # noqa: E402
from googlenet_fused.kernels import conv_lrn_relu as K  # noqa: E402
from googlenet_fused.kernels import tiling  # noqa: E402
from googlenet_fused.reference import (INCEPTION_CONFIGS, LRN_ALPHA, LRN_BETA,  # noqa: E402
                                      LRN_K, LRN_SIZE, SPATIAL_AT_224)
from googlenet_fused.stem_op import stem_conv_triton  # noqa: E402

TARGET = GPUTarget("cuda", 90, 64)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BATCHES = (1, 32, 256)


class Recorder:
    """Stands in for an autotuned kernel: keeps what the launcher passes."""

    def __init__(self, name, autotuner):
        self.name, self.autotuner, self.calls = name, autotuner, []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((args, kwargs))


def record_launches():
    """{(kernel name, dtype): [(module, batch, args, constexprs)]} from the real launchers;
    the launch is named by what it computes: "1x1+pool", "3x3" or "5x5", "training" added when
    it also stores the pre-activations, "no-LRN" when its epilogue is conv + bias + ReLU
    (torchvision's GoogLeNet, BatchNorm folded: its blocks' "5×5" branch is a 3×3), and the
    stem's "stem 1x1 no-LRN" and "stem 3x3" (the seed's) or "stem 3x3 no-LRN" (torchvision's)."""
    recorder = Recorder("gemm", K._kernel)
    K.check_device = lambda x, who: None  # CPU tensors stand in for CUDA ones: nothing runs
    K._kernel = recorder
    launches = {}

    def record(calls, module, batch, prefix):
        for args, kwargs in calls:
            kind = prefix + ("1x1+pool" if kwargs["POOL"] else f"{kwargs['KS']}x{kwargs['KS']}")
            kind += " training" if kwargs["SAVE_U"] else ""
            kind += "" if kwargs["LRN"] else " no-LRN"
            launches.setdefault((kind, dtype_name), []).append((module, batch, args, kwargs))

    for dtype_name, dtype in DTYPES.items():
        for name, (cin, c1, c3r, c3, c5r, c5, cp) in INCEPTION_CONFIGS.items():
            s = SPATIAL_AT_224[name]
            for n in BATCHES:
                # torch.empty does not touch memory: batch 256 costs no RAM until written
                x = torch.empty((n, cin, s, s), dtype=dtype, memory_format=torch.channels_last)
                recorder.calls.clear()
                for training, lrn, ks5 in ((False, True, 5), (True, True, 5), (False, False, 3)):
                    params = [torch.empty(shape, dtype=dtype) for shape in (
                        (c1 + c3r + c5r, cin, 1, 1), (c1 + c3r + c5r,), (c3, c3r, 3, 3), (c3,),
                        (c5, c5r, ks5, ks5), (c5,), (cp, cin, 1, 1), (cp,))]
                    module_forward(TritonSteps, x, *params, training, lrn=lrn)
                record(recorder.calls, name, n, "")
        for n in BATCHES:  # the stem's 1×1 and 3×3 (inference), as FusedStemConv and
            # FusedBasicConv2d run them
            x = torch.empty((n, 64, 56, 56), dtype=dtype, memory_format=torch.channels_last)
            recorder.calls.clear()
            for cout, ks, lrn_size in ((64, 1, 0), (192, 3, LRN_SIZE), (192, 3, 0)):
                stem_conv_triton(x, torch.empty((cout, 64, ks, ks), dtype=dtype),
                                 torch.empty(cout, dtype=dtype), lrn_size, LRN_ALPHA, LRN_BETA,
                                 LRN_K)
            record(recorder.calls, "stem", n, "stem ")
    return recorder, launches


def _compile(job):
    """One variant's PTX, cubin and shared memory, or its error (in a worker process)."""
    signature, consts, attrs, options = job
    start = time.time()
    try:
        k = triton.compile(ASTSource(fn=K._conv_lrn_relu_kernel, signature=signature,
                                     constexprs=consts, attrs=attrs),
                           target=TARGET, options=options)
        return dict(ok=True, shared=k.metadata.shared, ptx=k.asm["ptx"], cubin=k.asm["cubin"],
                    seconds=round(time.time() - start, 2))
    except Exception as exc:  # reported, and failed, by the test
        return dict(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="folder for each variant's PTX and cubin")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("GF_CODEGEN_JOBS", 0))
                        or os.cpu_count(), help="compiler processes (default: one per core)")
    opts = parser.parse_args(argv)
    recorder, launches = record_launches()
    fn = K._conv_lrn_relu_kernel
    backend = make_backend(TARGET)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    results, variants, jobs = [], {}, []
    for (kernel, dtype), calls in launches.items():
        for module, batch, args, constexprs in calls:
            itemsize = DTYPES[dtype].itemsize
            for cfg in [c for c in recorder.autotuner.configs
                        if tiling.usable(K.config_tuple(c), itemsize, constexprs["BLOCK_K"],
                                         pool=constexprs["POOL"], training=constexprs["SAVE_U"])]:
                # The kernel reads CHAINED only as CARRY = CHAIN and CHAINED: a config without
                # CHAIN compiles to the same code either way (48 of the 314 variants were such
                # pairs, byte-identical PTX), so it is compiled once, with CHAINED False.
                kwargs = dict(constexprs, **cfg.kwargs, num_warps=cfg.num_warps,
                              num_stages=cfg.num_stages)
                kwargs["CHAINED"] = constexprs["CHAINED"] and cfg.kwargs["CHAIN"]
                bound, specialization, options = binder(*args, **kwargs)
                options, signature, consts, attrs = fn._pack_args(backend, kwargs, bound,
                                                                  specialization, options)
                key = (kernel, dtype, str(cfg), repr(specialization))
                if key not in variants:  # each distinct variant is compiled once
                    c = cfg.kwargs
                    variants[key] = dict(
                        variant=len(variants), kernel=kernel, dtype=dtype, config=str(cfg),
                        num_stages=cfg.num_stages, k_step=constexprs["BLOCK_K"],
                        chained=kwargs["CHAINED"], file=(
                            f"{kernel.replace(' ', '-')}_{dtype}_"
                            f"m{c['BLOCK_M']}n{c['BLOCK_N']}k{constexprs['BLOCK_K']}"
                            f"w{cfg.num_warps}s{cfg.num_stages}_{module}_b{batch}_"
                            f"v{len(variants)}"))
                    jobs.append((signature, consts, attrs, options.__dict__))
                results.append(dict(kernel=kernel, dtype=dtype, module=module, batch=batch,
                                    x_channels=args[0].shape[1],
                                    config=str(cfg), num_stages=cfg.num_stages,
                                    k8=constexprs["K8"],
                                    chain=kwargs["CHAINED"],
                                    specialization=[list(map(str, s)) for s in specialization
                                                    if s[0] != "constexpr"],
                                    variant=variants[key]["variant"]))
    # Triton's compiler and ptxas are single-threaded: one process per core. Forked workers
    # inherit the kernel and the jobs; they run no torch op (no OpenMP pool to inherit).
    with multiprocessing.get_context("fork").Pool(max(1, min(opts.jobs, len(jobs)))) as pool:
        compiled = pool.map(_compile, jobs, chunksize=1)
    os.makedirs(opts.out, exist_ok=True)
    for v, result in zip(variants.values(), compiled):
        stem = os.path.join(opts.out, v.pop("file"))
        if result["ok"]:
            with open(stem + ".ptx", "w") as f:
                f.write(result.pop("ptx"))
            with open(stem + ".cubin", "wb") as f:
                f.write(result.pop("cubin"))
            result.update(ptx=stem + ".ptx", cubin=stem + ".cubin")
        v.update(result)
    json.dump(dict(launches=results, variants={v["variant"]: v for v in variants.values()}),
              sys.stdout)


if __name__ == "__main__":
    main()
