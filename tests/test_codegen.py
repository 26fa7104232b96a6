"""What the GPU compiler made of the extension's CUDA kernels, checked without a GPU.

Each csrc/*.cu is compiled for the H200 (sm_90) with the flags torch's extension build uses,
and the cubin is read: no register spills and no stack (ptxas and cuobjdump), no call to the
64-bit division routines (nvdisasm names them), and 16-byte global loads and stores in the
forward LRN kernels.
GF_CODEGEN_DUMP=DIR keeps each cubin, its SASS and the ptxas log there.
"""
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


pytestmark = pytest.mark.skipif(
    CUDA_HOME is None or torch.version.cuda is None or not _tool("cuobjdump")
    or not _tool("nvdisasm"), reason="needs nvcc, a CUDA build of torch, cuobjdump and nvdisasm")


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


# Each CUDA source, the name its kernels share, and whether they move 16-byte chunks.
SOURCES = {"lrn_relu_concat_cuda.cu": ("lrn_relu_concat_kernel", True),
           "lrn_relu_concat_backward_cuda.cu": ("lrn_relu_concat_backward_kernel", False)}


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
    kernel, vectorized = SOURCES[request.param]
    return dict(log=log, sass=sass, usage=usage, kernel=kernel, vectorized=vectorized)


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
def test_forward_kernels_use_16_byte_loads_and_stores(cubin):
    kernels = {name: code for name, code in _functions(cubin["sass"]).items()
               if cubin["kernel"] in name}
    assert len(kernels) == 8, sorted(kernels)
    if not cubin["vectorized"]:
        pytest.skip("the backward kernel reads channel by channel (scalar loads)")
    for name, code in kernels.items():
        assert re.search(r"LDG\.E\.128", code), f"{name}: no 16-byte global load"
        assert re.search(r"STG\.E\.128", code), f"{name}: no 16-byte global store"


if __name__ == "__main__":  # GF_CODEGEN_DUMP=DIR python tests/test_codegen.py
    sys.exit(pytest.main([__file__, "-q"]))
