"""Triton kernels and their launchers (installed as googlenet_fused.kernels)."""
