"""What the GPU compiler made of the extension's CUDA kernels and the Triton kernels, checked
without a GPU.

Each csrc/*.cu is compiled for the H200 (sm_90) with the flags torch's extension build uses,
and the cubin is read: no register spills and no stack (ptxas and cuobjdump), no call to the
64-bit division routines (nvdisasm names them), and 16-byte global loads and stores in the
forward LRN kernels.

The Triton kernels are compiled by tests/aot_compile.py for every config of their autotune lists
in fp32 / fp16 / bf16, specialized as their launcher specializes them for the nine modules and
the stem at batch 1, 32 and 256 (channels_last): the seed's launches (LRN epilogues, inference
and training) and torchvision's (BatchNorm folded: conv + bias + ReLU), and each variant is
checked: no spills (cubin), shared memory
within the H200's 227 KB, Hopper tensor-core MMA (wgmma), operand loads as 16-byte cp.async
copies with more than one group in flight (the software pipeline is real), channel pairs (or
more) per store, and a bounded number of variants.
GF_CODEGEN_DUMP=DIR keeps each cubin, its SASS and the ptxas log there, and each Triton
variant's PTX and cubin (named by kernel, dtype, config, module and batch).
"""
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_HOME = next((h for h in (os.environ.get("CUDA_HOME"), "/usr/local/cuda")
                  if h and os.path.exists(os.path.join(h, "bin", "nvcc"))), None)


def _tool(name):
    # Triton's wheel carries cuobjdump and nvdisasm for sm_90; the CUDA toolkit may too.
    try:
        import triton

        bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
        if os.path.exists(bundled):
            return bundled
    except ImportError:
        pass
    return shutil.which(name) or (CUDA_HOME and shutil.which(name, path=os.path.join(CUDA_HOME,
                                                                                     "bin")))


pytestmark = [pytest.mark.xdist_group("codegen"), pytest.mark.skipif(
    CUDA_HOME is None or torch.version.cuda is None or not _tool("cuobjdump")
    or not _tool("nvdisasm"), reason="needs nvcc, a CUDA build of torch, cuobjdump and nvdisasm")]


def _std():
    # torch's extension build compiles CUDA sources as C++20 from torch 2.13 on, C++17 before.
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    return "c++20" if (major, minor) >= (2, 13) else "c++17"


def compile_cu(source, out_dir):
    """(cubin path, ptxas log) of csrc/<source> compiled for sm_90."""
    cubin = os.path.join(out_dir, source.replace(".cu", ".sm_90.cubin"))
    includes = [f"-I{p}" for p in cpp_extension.include_paths("cuda")]
    cmd = [os.path.join(CUDA_HOME, "bin", "nvcc"), "-cubin", "-arch=sm_90", "-O3",
           f"-std={_std()}", "-DWITH_CUDA", "-Xptxas", "-v", *cpp_extension.COMMON_NVCC_FLAGS,
           *includes, f"-I{sysconfig.get_paths()['include']}", "-o", cubin,
           os.path.join(ROOT, "csrc", source)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return cubin, res.stderr


# Each CUDA source and the name its kernels share.
SOURCES = {"lrn_relu_concat_cuda.cu": "lrn_relu_concat_kernel",
           "lrn_relu_concat_backward_cuda.cu": "lrn_relu_concat_backward_kernel"}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def cubin(request, tmp_path_factory):
    out = os.environ.get("GF_CODEGEN_DUMP") or str(tmp_path_factory.mktemp("codegen"))
    os.makedirs(out, exist_ok=True)
    path, log = compile_cu(request.param, out)
    sass = subprocess.run([_tool("nvdisasm"), "-c", path], capture_output=True, text=True,
                          check=True).stdout
    usage = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True,
                           text=True, check=True).stdout
    if os.environ.get("GF_CODEGEN_DUMP"):
        for name, text in (("ptxas.log", log), ("sass", sass), ("res-usage", usage)):
            with open(path.replace(".cubin", f".{name}.txt"), "w") as f:
                f.write(text)
    return dict(log=log, sass=sass, usage=usage, kernel=SOURCES[request.param])


def _functions(sass):
    """{mangled kernel name: its SASS} from nvdisasm's listing."""
    parts = re.split(r"\n\s*\.text\.(\S+):", sass)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.slow
def test_no_spills_and_no_stack(cubin):
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", cubin["log"])
    frames = re.findall(r"(\d+) bytes stack frame", cubin["log"])
    assert len(spills) >= 8, cubin["log"][-2000:]  # 4 dtypes x 2 index types
    assert all(s == ("0", "0") for s in spills), cubin["log"]
    assert all(f == "0" for f in frames), cubin["log"]
    entries = re.findall(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", cubin["usage"])
    assert entries and all(stack == "0" and local == "0" for _, stack, local in entries), \
        cubin["usage"]


@pytest.mark.slow
def test_no_64_bit_division(cubin):
    assert cubin["kernel"] in cubin["sass"]
    # Integer routines (div_s64, rem_u64, ...); the float64 kernels may divide doubles.
    routines = set(re.findall(r"__cuda_sm\d+_(?:div|rem)_[su]64\w*", cubin["sass"]))
    assert not routines, f"64-bit division routines called: {sorted(routines)}"


@pytest.mark.slow
def test_kernels_use_16_byte_loads_and_stores(cubin):
    kernels = {name: code for name, code in _functions(cubin["sass"]).items()
               if cubin["kernel"] in name}
    assert len(kernels) == 8, sorted(kernels)
    for name, code in kernels.items():
        assert re.search(r"LDG\.E\.128", code), f"{name}: no 16-byte global load"
        assert re.search(r"STG\.E\.128", code), f"{name}: no 16-byte global store"


# ----------------------------------------------------------------------------- Triton kernels
@pytest.fixture(scope="module")
def triton_variants(tmp_path_factory):
    out = os.environ.get("GF_CODEGEN_DUMP") or str(tmp_path_factory.mktemp("triton_codegen"))
    script = os.path.join(ROOT, "tests", "aot_compile.py")
    res = subprocess.run([sys.executable, script, "--out", out], capture_output=True, text=True,
                         timeout=1800, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    for v in report["variants"].values():
        if v["ok"]:
            v["usage"] = subprocess.run([_tool("cuobjdump"), "-res-usage", v["cubin"]],
                                        capture_output=True, text=True, check=True).stdout
            with open(v["ptx"]) as f:
                v["ptx_text"] = f.read()
    return report


@pytest.mark.slow
def test_triton_every_config_and_dtype_compiles_for_every_kernel(triton_variants):
    from googlenet_fused.kernels import tiling

    variants = triton_variants["variants"].values()
    failed = [f"{v['kernel']} {v['dtype']} {v['config']}: {v['error']}" for v in variants
              if not v["ok"]]
    assert not failed, "\n".join(failed)
    launches = triton_variants["launches"]
    modules = {(r["module"], r["batch"]) for r in launches if r["module"] != "stem"}
    assert len(modules) == 9 * 3
    stem = {("stem", n) for n in (1, 32, 256)}
    for kernel, every in [(k, modules) for k in (
            "1x1+pool", "3x3", "5x5", "1x1+pool training", "3x3 training", "5x5 training",
            "1x1+pool no-LRN", "3x3 no-LRN")] + [
            (k, stem) for k in ("stem 1x1 no-LRN", "stem 3x3", "stem 3x3 no-LRN")]:
        for dtype in ("fp32", "fp16", "bf16"):
            rows = [r for r in launches if r["kernel"] == kernel and r["dtype"] == dtype]
            # each launch has compiled configs for its autotuner (those tiling.usable admits)
            assert {(r["module"], r["batch"]) for r in rows} == every, (kernel, dtype)
            configs = {r["config"] for r in rows}
            assert len(configs) >= 2 and len(configs) <= len(tiling.CONFIGS), (kernel, configs)


@pytest.mark.slow
def test_triton_no_spills_and_shared_memory_fits(triton_variants):
    for v in triton_variants["variants"].values():
        entries = re.findall(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", v["usage"])
        assert entries, v["usage"]
        for regs, stack, local in entries:
            assert stack == "0" and local == "0", (
                f"{v['kernel']} {v['dtype']} {v['config']} spills: {regs} registers, "
                f"{stack} B stack, {local} B local ({v['cubin']})")
        assert v["shared"] <= 227 * 1024, f"{v['config']} needs {v['shared']} B of shared memory"


@pytest.mark.slow
def test_triton_wgmma_and_pipelined_16_byte_operand_loads(triton_variants):
    for v in triton_variants["variants"].values():
        ptx, what = v["ptx_text"], f"{v['kernel']} {v['dtype']} {v['config']}"
        assert "wgmma.mma_async" in ptx, f"{what}: no Hopper tensor-core MMA (wgmma)"
        copies = re.findall(r"cp\.async\.c[ag]\.shared\.global[^;]*?,\s*(0x[0-9a-f]+|\d+)", ptx)
        assert copies, f"{what}: operands not loaded with cp.async"
        sizes = {int(c, 0) for c in copies}
        assert sizes == {16}, f"{what}: cp.async of {sorted(sizes)} bytes, not only 16-byte vectors"
        # The pipeliner copies stage i + 1 while stage i multiplies; with S stages, S - 2 copy
        # groups stay in flight at its wait (num_stages = 2 overlaps with none left waiting).
        in_flight = [int(n) for n in re.findall(r"cp\.async\.wait_group\s+(\d+)", ptx)]
        assert in_flight and max(in_flight) >= v["num_stages"] - 2, (
            f"{what}: num_stages={v['num_stages']} but cp.async waits {sorted(set(in_flight))}")


@pytest.mark.slow
def test_triton_stores_move_channel_pairs(triton_variants):
    """Every launch (all channel bounds of GoogLeNet's modules and stem are even: the kernel's
    EVEN) stores two channels per instruction or more: no single 16-bit value in fp16 / bf16,
    no single 32-bit one in fp32."""
    itemsize = {"fp32": 4, "fp16": 2, "bf16": 2}
    for v in triton_variants["variants"].values():
        stores = re.findall(r"st\.global(?:\.v(\d))?\.b(\d+)", v["ptx_text"])
        widths = {int(n or 1) * int(bits) // 8 for n, bits in stores}
        assert widths and min(widths) >= 2 * itemsize[v["dtype"]], (
            f"{v['kernel']} {v['dtype']} {v['config']}: stores of {sorted(widths)} bytes")


@pytest.mark.slow
def test_triton_variants_are_few_and_shapes_share_them(triton_variants):
    """Specialization is on ("divisible by 16" for pointers, K and row strides), but values are
    not: the nine modules and the stem at batch 1, 32 and 256 in three dtypes share a few
    variants per (launch kind, dtype, config, K step, chains in the plan or not)."""
    launches, variants = triton_variants["launches"], triton_variants["variants"]
    assert {r["batch"] for r in launches} == {1, 32, 256}
    assert len({r["module"] for r in launches}) == 9 + 1
    per_config = {}
    for v in variants.values():
        per_config.setdefault((v["kernel"], v["dtype"], v["config"], v["k_step"], v["chained"]),
                              []).append(v)
    assert max(len(vs) for vs in per_config.values()) <= 2, "more than 2 specializations"
    # aot_compile.py compiles a config without CHAIN once, with CHAINED False: right only while
    # the kernel reads CHAINED as CARRY = CHAIN and CHAINED and nowhere else.
    from googlenet_fused.kernels import conv_lrn_relu

    source = inspect.getsource(conv_lrn_relu._conv_lrn_relu_kernel.fn)
    assert re.findall(r"\bCHAINED\b", source) == ["CHAINED"] * 2 and \
        "CARRY: tl.constexpr = CHAIN and CHAINED" in source
    assert len(variants) <= 2 * len(per_config)
    print(f"{len(variants)} compiled variants for {len(launches)} (module, batch, dtype, config) "
          f"launches")
    # Chains run where tiling.launch_chains allows them (inference launches without pool tiles,
    # the configs of tiling.CHAIN_CONFIGS) and pay: every 3×3 branch at batch 256 runs them.
    from googlenet_fused.reference import INCEPTION_CONFIGS

    chained = {(r["kernel"], r["module"], r["batch"]) for r in launches if r["chain"]}
    assert {kernel for kernel, _, _ in chained} == {"3x3", "5x5", "stem 3x3"}
    assert {(m, 256) for m in INCEPTION_CONFIGS} <= {(m, n) for k, m, n in chained if k == "3x3"}
    assert all("CHAIN: True" in r["config"] for r in launches if r["chain"])
    # x's pixel stride (its channels) is "divisible by 16" for every launch but those over the
    # 24-channel reductions of 4b and 4c (the 5×5, torchvision's 3×3 in its place), whose K8
    # hint gives the loads the multiple of 8 they need instead.
    assert {(r["kernel"], r["module"]) for r in launches if r["x_channels"] == 24} == {
        (k, m) for k in ("5x5", "5x5 training", "3x3 no-LRN") for m in ("4b", "4c")}
    for r in launches:
        sig = r["specialization"]
        k8 = r["x_channels"] == 24
        assert r["k8"] == k8 and sig[0] == ["*" + r["dtype"], "D"], (r["module"], r["kernel"])
        assert sig[1] == ["i32", "" if k8 else "D"], (r["module"], r["kernel"], sig[:2])


if __name__ == "__main__":  # GF_CODEGEN_DUMP=DIR python tests/test_codegen.py
    sys.exit(pytest.main([__file__, "-q"]))
