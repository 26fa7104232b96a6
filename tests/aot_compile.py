"""Compile every Triton kernel config for the H200 (sm_90) without a GPU; print JSON results.

Run in its own process: the tests run the interpreter (TRITON_INTERPRET=1), whose functions
cannot be compiled for a GPU.
"""
import json
import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from googlenet_fused.kernels import conv1x1_lrn_relu as K  # noqa: E402

POINTERS = {"x_ptr", "w_ptr", "b_ptr", "o0_ptr", "o1_ptr", "o2_ptr"}
FLOATS = {"lrn_k", "alpha_over_size", "beta"}


def main():
    fn = K._conv1x1_lrn_relu_kernel
    results = []
    for pool in (False, True):
        for dtype in ("fp32", "fp16", "bf16"):
            for cfg in K.configs(pool):
                constexprs = dict(cfg.kwargs, SIZE=5, POOL=pool, NUM_BRANCHES=1 if pool else 3,
                                  UPCAST=False, DOT_PRECISION="tf32")
                signature = {a: "constexpr" if a in constexprs else f"*{dtype}" if a in POINTERS
                             else "fp32" if a in FLOATS else "i32" for a in fn.arg_names}
                row = dict(pool=pool, dtype=dtype, config=str(cfg))
                start = time.time()
                try:
                    k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                       target=GPUTarget("cuda", 90, 64),
                                       options=dict(num_warps=cfg.num_warps,
                                                    num_stages=cfg.num_stages))
                    row.update(ok=bool(k.asm["cubin"]), shared=k.metadata.shared,
                               wgmma="wgmma" in k.asm["ptx"])
                except Exception as exc:  # reported, and failed, by the test
                    row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
                row["seconds"] = round(time.time() - start, 2)
                results.append(row)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
