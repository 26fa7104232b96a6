"""benchmarks/roofline.py: the model's arithmetic on cases worked by hand."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import roofline  # noqa: E402


def test_ideal_module_by_hand():
    # 4a at batch 256, bf16: x [256, 480, 14, 14] read once, out [256, 512, 14, 14] written once
    (k,) = roofline.ideal_module((480, 192, 96, 208, 16, 48, 64), 256, 14, "bf16")
    px = 256 * 14 * 14
    assert k.flops == 2 * px * (480 * (192 + 96 + 16 + 64) + 96 * 208 * 9 + 16 * 48 * 25)
    weights = 480 * 368 + 96 * 208 * 9 + 16 * 48 * 25
    assert k.bytes == 2 * (px * (480 + 512) + weights)
    assert k.seconds("bf16") == pytest.approx(k.flops / 790e12 + 2e-6)  # compute-bound


def test_fused_gemm_waste_by_hand():
    # 5b's pool GEMM at batch 1: 7×7 = 49 rows padded to a 64-row tile; cp = 128 columns in
    # tiles that store 60 of 64 (3 tiles) or 124 of 128 (2 tiles) columns.
    k = roofline.gemm_1x1("pool", 1, 7, 832, 128, 2, "bf16")
    candidates = [2.0 * 64 * 832 * 3 * 64, 2.0 * 128 * 832 * 3 * 64, 2.0 * 128 * 832 * 2 * 128]
    assert k.flops in candidates
    assert k.bytes == 2 * (49 * 832 + 128 * 832 + 49 * 128)  # x fits in L2: read once


def test_x_reread_per_column_tile_beyond_l2():
    # 3a at batch 256: x is 256·28·28·192·2 B = 77 MB > 60 MB of L2
    k = roofline.gemm_1x1("reductions", 256, 28, 192, 64 + 96 + 16, 2, "bf16")
    x_bytes = 256 * 28 * 28 * 192 * 2
    assert k.bytes >= 2 * x_bytes


def test_eager_above_fused_above_ideal_and_the_last_line():
    for name in roofline.INCEPTION_CONFIGS:
        e, f, i = (roofline.estimate(name, 256, "bf16", impl)[2]
                   for impl in ("eager", "fused", "ideal"))
        assert e > f > i
    text = roofline.report()
    last = text.strip().splitlines()[-1]
    assert last.startswith("nine modules, batch 256, bf16: fused/ideal = ")
    assert 1.0 < float(last.rsplit("= ", 1)[1]) < 5.0
    assert "| network | 256 |" in text
