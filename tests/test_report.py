"""benchmarks/report.py on a made-up pytest-benchmark file: table, ratios and the goal verdicts."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import report  # noqa: E402


def _bench(module, provider, batch, median_s, dtype="fp32", layout="nchw", cuda=None):
    return dict(stats=dict(median=median_s, min=0.5 * median_s), extra_info=dict(
        module=module, provider=provider, batch=batch, dtype=dtype, layout=layout, gflops=10.0,
        device_name="test CPU", torch="2.x", triton="3.x", cuda=cuda, cpu_threads=2))


@pytest.fixture
def cpu_results(tmp_path):
    rows = [
        # 4a meets everything: 4.4x eager, 2x compile, 1.1x floor
        _bench("4a", "eager", 16, 0.088), _bench("4a", "compile", 16, 0.040),
        _bench("4a", "fused-native", 16, 0.020), _bench("4a", "conv-floor", 16, 0.0182),
        # 5b misses the eager goal (3x) and the floor goal (1.5x floor)
        _bench("5b", "eager", 16, 0.060), _bench("5b", "compile", 16, 0.040),
        _bench("5b", "fused-native", 16, 0.020), _bench("5b", "conv-floor", 16, 0.0133),
        # batch 1 rows are outside every CPU goal
        _bench("5b", "eager", 1, 0.002), _bench("5b", "fused-native", 1, 0.002),
        _bench("network", "eager", 8, 0.9), _bench("network", "fused-native", 8, 0.25),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(dict(benchmarks=rows)))
    return path


def test_table_ratios_and_goals(cpu_results, tmp_path):
    report.main([str(cpu_results), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert ("| 4a | 16 | fp32 | nchw | 88.000 | 40.000 | - | 20.000 (native) | 4.40x | 2.00x | - "
            "| 1.10 | 4.84x | 10 |") in md
    assert ("- MISSED: fused >= 4x eager per module, batch 16, fp32 (1 of 2 rows: "
            "5b b16 fp32 nchw: 3.00x)") in md
    assert "- MET: fused >= 1.5x torch.compile per module, batch 16, fp32 (all 2 rows; worst 2.00x)" in md
    assert "5b b16 fp32 nchw: 1.50x floor" in md and "4a b16 fp32 nchw: 1.10x floor" not in md
    assert "- MET: whole network >= 3x eager, batch 8, fp32 (all 1 rows; worst 3.60x)" in md
    assert (tmp_path / "out" / "speedup.png").stat().st_size > 0


def test_gpu_goals_not_measured_are_said(tmp_path):
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(dict(benchmarks=[
        _bench("4a", "eager", 32, 0.004, "fp16", cuda="13.0"),
        _bench("4a", "fused-triton", 32, 0.001, "fp16", cuda="13.0")])))
    md = report.markdown(*report.load(str(path)), "t")
    assert "## Goals (GPU)" in md
    assert "- MET: fused >= 3x eager" in md
    assert "- NOT MEASURED: fused >= 1.3x torch.compile max-autotune" in md


def test_min_statistic(cpu_results):
    groups, meta = report.load(str(cpu_results), "min")
    assert groups[("4a", 16, "fp32", "nchw")]["eager"]["seconds"] == 0.044
    md = report.markdown(groups, meta, "t", "min")
    assert "Times are the min over rounds" in md and "| 44.000 | 20.000 |" in md


def test_module_table_op_table_and_chart_from_several_files(cpu_results, tmp_path):
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps(dict(benchmarks=[
        _bench("4a-lrn", "eager", 16, 0.034, layout="channels_last"),
        _bench("4a-lrn", "fused-extension", 16, 0.001, layout="channels_last")])))
    report.main([str(cpu_results), str(ops), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    modules, op_part = md.split("## Fused ops vs the ATen ops they replace")
    assert "| 4a | 16 | fp32 | nchw |" in modules and "4a-lrn" not in modules
    assert "| 4a-lrn | 16 | fp32 | channels_last | 34.000 | - | 1.000 (extension) | 34.00x | - |" \
        in op_part
    assert "## Goals (CPU)" in modules


def test_chart_has_no_bar_for_a_missing_baseline(cpu_results, monkeypatch, tmp_path):
    import matplotlib.axes

    drawn = []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, xs, ys, *a, **k: (
        drawn.append((k.get("label"), list(ys))), real_bar(self, xs, ys, *a, **k))[1])
    report.chart(*report.load(str(cpu_results))[:1], str(tmp_path / "c.png"), "t")
    # batch 1 has no compile row: its panel draws eager bars only, never a 0.0 bar
    assert all(y > 0 for _, ys in drawn for y in ys)
    assert ("fused vs compile", []) in drawn


def test_training_rows_have_their_own_table(tmp_path):
    rows = [_bench("network-train", "eager", 8, 1.0), _bench("network-train", "compile", 8, 0.8),
            _bench("network-train", "fused-native", 8, 0.4)]
    rows[0]["extra_info"]["saved_mb"], rows[2]["extra_info"]["saved_mb"] = 900.0, 300.0
    path = tmp_path / "train.json"
    path.write_text(json.dumps(dict(benchmarks=rows)))
    md = report.markdown(*report.load(str(path)), "t")
    assert "| network | 8 | fp32 | 1000.0 | 800.0 | 400.0 (native) | 2.50x | 2.00x | 900 | 300 |" in md
    assert "Fused ops" not in md


def test_peers_table_best_peer_goals_and_ceiling(tmp_path):
    rows = [_bench("network", "eager", 8, 0.47), _bench("network", "compile", 8, 0.186),
            _bench("network", "compile-freeze", 8, 0.191),
            _bench("network", "onnxruntime", 8, 0.415), _bench("network", "openvino", 8, 0.146),
            _bench("network", "fused-native", 8, 0.161),
            _bench("tv-network", "openvino", 1, 0.0184, "bf16"),
            _bench("tv-network", "fused-native", 1, 0.0150, "bf16"),
            _bench("gemm", "eager", 4096, 0.7, layout="-"),
            _bench("gemm", "onednn", 4096, 0.7, layout="-")]
    rows[-2]["extra_info"]["gflops"] = 93.5  # torch.mm: the faster provider is the ceiling
    rows[-1]["extra_info"]["gflops"] = 187.0
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(dict(benchmarks=rows)))
    md = report.markdown(*report.load(str(path)), "t")
    table = md.split("## Against the CPU peers")[1]
    # fused 161 ms against OpenVINO's 146: 0.91x the best peer; 10 GFLOP/s of a 187 ceiling
    assert ("| network | 8 | fp32 | nchw | 191.00 | 415.00 | 146.00 | 161.00 (native) | "
            "0.91x (openvino) | 5 % | 5 % |") in table
    assert "| tv-network | 1 | bf16 | nchw | - | - | 18.40 | 15.00 (native) | 1.23x (openvino) |" \
        in table
    assert ("- MISSED: network >= 1.0x the best peer, batch 1 and 8, fp32 (1 of 1 rows: "
            "network b8 fp32 nchw: 0.91x)") in md
    assert "- MET: torchvision's network >= 1.2x the best peer, batch 1 and 8, bf16" in md
    assert "- NOT MEASURED: network >= 1.1x OpenVINO, batch 8, bf16" in md
    assert "gemm" not in md.split("## Against")[0]  # the ceiling row is no module row
