"""Build of googlenet-fused.

The extension googlenet_fused._C is compiled from csrc/: the CPU kernels always, the CUDA kernels
whenever torch is a CUDA build and nvcc is found (GPU or not). Environment switches:
  GOOGLENET_FUSED_CPU_ONLY=1    build the CPU kernels only
  GOOGLENET_FUSED_NO_EXTENSION=1 build no extension (the package then runs its reference paths)
Install with `pip install --no-build-isolation -e .` after torch, so the extension is built
against the torch that will load it.
"""
import glob
import os
import shutil

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0") not in ("", "0")


def _find_cuda_home():
    # torch follows `which nvcc`, which here can be a wrapper script outside the toolkit.
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def extension_build():
    """(ext_modules, cmdclass) for the extension, or nothing when it is switched off."""
    if _flag("GOOGLENET_FUSED_NO_EXTENSION"):
        return [], {}
    import torch

    cuda_home = None if _flag("GOOGLENET_FUSED_CPU_ONLY") else _find_cuda_home()
    with_cuda = torch.version.cuda is not None and cuda_home is not None
    if with_cuda:
        os.environ["CUDA_HOME"] = cuda_home  # read when cpp_extension is imported
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"  # no GPU to ask: build for the H200
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    # -fno-math-errno lets sqrt vectorize (errno is never read); the C++ standard is left to
    # torch (C++20 from 2.13).
    cxx = ["-O3", "-fno-math-errno", "-fopenmp"]
    if not _flag("GOOGLENET_FUSED_PORTABLE"):
        cxx.append("-march=native")  # source builds run where they are built
    kwargs = dict(extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "*.cu")))
        kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-DWITH_CUDA"]
        kwargs["extra_compile_args"]["cxx"].append("-DWITH_CUDA")
        ext = CUDAExtension("googlenet_fused._C", sources, **kwargs)
    else:
        ext = CppExtension("googlenet_fused._C", sources, **kwargs)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = extension_build()

setup(
    name="googlenet-fused",
    version="0.1.0",
    description="Fused Triton and C++/CUDA kernels for the GoogLeNet of 'Going Deeper with "
                "Convolutions' (LRN in every branch): drop-in modules for PyTorch",
    long_description=open(os.path.join(ROOT, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",  # what CI tests (3.11) and the GPU machine runs (3.12)
    packages=["googlenet_fused", "googlenet_fused.kernels"],
    package_dir={"googlenet_fused.kernels": "kernels"},
    install_requires=["torch>=2.11", "numpy", "triton>=3.6; platform_system == 'Linux'"],
    extras_require={
        "test": ["pytest", "pytest-benchmark", "pytest-xdist", "matplotlib"],
        "plot": ["matplotlib"],
        # torchvision's GoogLeNet goes through fuse() too; the CPU runtimes of the benchmarks
        "torchvision": ["torchvision"],
        "peers": ["onnx", "onnxruntime", "openvino"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["googlenet-fused=googlenet_fused.__main__:main"]},
)
