"""The extension must be built, with CUDA kernels wherever a CUDA torch and nvcc exist."""
import os
import shutil

import pytest
import torch

from googlenet_fused import ops


def _nvcc_present():
    return any(os.path.exists(os.path.join(h, "bin", "nvcc"))
               for h in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda")) or shutil.which("nvcc")


def test_extension_is_built():
    if os.environ.get("GOOGLENET_FUSED_NO_EXTENSION") == "1":
        pytest.skip("built without the extension on purpose")
    assert ops.extension_available(), ops.EXTENSION_ERROR


def test_cuda_kernels_compiled_when_possible():
    if os.environ.get("GOOGLENET_FUSED_CPU_ONLY") == "1" or not ops.extension_available():
        pytest.skip("CPU-only build requested")
    if torch.version.cuda is None or not _nvcc_present():
        pytest.skip("no CUDA torch or no nvcc: CPU-only build is expected")
    assert ops.has_cuda_kernels(), "torch is a CUDA build and nvcc exists, but _C has no CUDA kernels"
