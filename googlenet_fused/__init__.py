"""googlenet-fused: fused Triton and C++/CUDA kernels for the seed notebook's GoogLeNet.

    from googlenet_fused import Inception, GoogLeNet                 # plain PyTorch reference
    from googlenet_fused import FusedInception, FusedGoogLeNet, fuse  # drop-in fused modules
    from googlenet_fused import FusedLocalResponseNorm               # any LRN, one pass
    from googlenet_fused import FusedMaxPool2d                       # 3×3 max pools, CPU
    fuse(torchvision.models.googlenet(...).eval())                   # torchvision's, BN folded
    from googlenet_fused import FusedTorchvisionInception, FusedBasicConv2d
    torch.ops.googlenet_fused.lrn_relu_concat(branches, 5, 1e-3, 0.75, 2.0)
"""
from .modules import (FusedGoogLeNet, FusedInception, FusedLocalResponseNorm, FusedMaxPool2d,
                      fuse)
from .ops import extension_available, local_response_norm, lrn_relu, lrn_relu_concat
from .reference import INCEPTION_CONFIGS, GoogLeNet, Inception
from .torchvision_googlenet import FusedBasicConv2d, FusedTorchvisionInception

__version__ = "0.1.0"
__all__ = ["Inception", "GoogLeNet", "INCEPTION_CONFIGS", "FusedInception", "FusedGoogLeNet",
           "FusedLocalResponseNorm", "FusedMaxPool2d", "FusedTorchvisionInception",
           "FusedBasicConv2d", "fuse", "local_response_norm", "lrn_relu", "lrn_relu_concat",
           "extension_available"]
