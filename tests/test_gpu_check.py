"""benchmarks/gpu_check.sh in its dry mode: relative OUT_DIR, partial results within a budget,
loud failure without a usable Python."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")


def _run(out_dir, cwd, **env):
    # Not a pytest-xdist worker's variables: pytest-benchmark would disable itself in the
    # script's own pytest runs.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    full_env = {**inherited, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", SCRIPT, out_dir], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_dry_run_relative_out_dir_and_budget_leaves_partial_results(tmp_path):
    # 160 s, less 20 for the report: the first dry group (estimated 20 s) fits, the second
    # (150 s) no longer does once anything has run. On a loaded machine (make test runs this
    # beside the other tests and the other version set: its first step alone once took 39 s)
    # the first group still has 100 s before it is killed.
    res = _run("results/dry", tmp_path, GPU_CHECK_STEPS="bench", GPU_CHECK_BUDGET_S="160")
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "results" / "dry"  # relative to where the script was started
    assert "[0 s of 160]" in res.stdout  # each step shows where it stands in the budget
    with open(out / "bench_dry-fp32-nchw-1.json") as f:
        rows = json.load(f)["benchmarks"]
    assert {r["extra_info"]["provider"] for r in rows} == {"eager", "fused-native", "conv-floor"}
    assert not (out / "bench_dry-fp32-cl-1.json").exists()
    assert (out / "left_out.txt").read_text().startswith("dry-fp32-cl-1: left out")
    report = (out / "report.md").read_text()
    assert "| 5b | 1 | fp32 | nchw |" in report and "channels_last" not in report
    summary = (out / "summary.txt").read_text()
    assert "left out: dry-fp32-cl-1" in summary and "status 0" in summary


def test_fails_loudly_without_torch(tmp_path):
    python = tmp_path / "python"  # this Python without its site-packages: no torch
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    res = _run(str(tmp_path / "out"), tmp_path, PYTHON=str(python))
    assert res.returncode == 1
    assert "has no torch" in res.stdout
    assert "gpu_check: FAILED: no usable Python" in res.stderr
