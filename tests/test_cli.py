"""The command line: summary numbers and the main job."""
import os
import re
import subprocess
import sys

import pytest
import torch

from googlenet_fused.summary import summary_rows


def test_summary_counts_against_table1():
    _, rows = summary_rows(224)
    by = {r["stage"]: r for r in rows}
    # 4a by hand from Table 1: 14×14 output pixels
    hw = 14 * 14
    macs_4a = hw * (480 * (192 + 96 + 16 + 64) + 96 * 208 * 9 + 16 * 48 * 25)
    assert by["4a"]["macs"] == macs_4a
    assert by["4a"]["macs_without_reduction"] == hw * 480 * (192 + 208 * 9 + 48 * 25 + 64)
    assert by["4a"]["output"] == (512, 14, 14) and by["5b"]["output"] == (1024, 7, 7)
    assert by["3a"]["params"] == 163_696


def _run(*args):
    return subprocess.run([sys.executable, "-m", "googlenet_fused", *args], capture_output=True,
                          text=True, timeout=600)


def test_summary_command():
    res = _run("summary", "--image-size", "224")
    assert res.returncode == 0, res.stderr
    assert "5b" in res.stdout and "total" in res.stdout and "1,582,671,872" in res.stdout
    assert "--image-size" in _run("summary", "--help").stdout


@pytest.mark.slow
def test_main_job_runs_and_agrees(tmp_path):
    chart = tmp_path / "modules.png"
    res = _run("--batch", "2", "--image-size", "96", "--repeats", "1", "--per-module",
               "--plot", str(chart))
    assert res.returncode == 0, res.stdout + res.stderr
    err = float(re.search(r"max rel error ([0-9.e+-]+)", res.stdout).group(1))
    assert err < 1e-4
    assert "top-1 agreement 100.0%" in res.stdout
    assert "speedup" in res.stdout and "5b" in res.stdout
    assert chart.stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_main_job_other_dtypes_compare_with_full_precision(dtype):
    res = _run("--dtype", dtype, "--batch", "2", "--image-size", "48", "--repeats", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "vs the reference in float" + ("64" if dtype == "float64" else "32") in res.stdout
    rel = float(re.search(r"max rel error ([0-9.e+-]+)", res.stdout).group(1))
    assert rel < (1e-12 if dtype == "float64" else 3e-2)
    assert rel > 0 or dtype != "float64"


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
    (["--repeats", "-1"], "argument --repeats: must be at least 1, got -1"),
    (["--image-size", "6"], "--image-size 6: .*at least 7"),
    (["--device", "tpu0"], "'tpu0' is not a device"),
    (["--dtype", "int8"], "argument --dtype: invalid choice"),
    (["summary", "--image-size", "5"], "--image-size 5: .*at least 7"),
] + ([(["--device", "cuda"], "sees no CUDA GPU")] if not torch.cuda.is_available() else []))
def test_user_mistakes_give_one_line_errors(args, message, capsys):
    # In this process (the entry point itself runs in the tests above): an exception other
    # than argparse's exit would fail the test as a traceback does on the command line.
    from googlenet_fused.__main__ import main

    try:
        code = main(args)
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    stderr = capsys.readouterr().err
    assert code == 2
    assert re.search(message, stderr.strip().splitlines()[-1]), stderr


def test_backend_that_cannot_run_names_the_input_shape():
    env = dict(os.environ, TRITON_INTERPRET="0")
    res = subprocess.run([sys.executable, "-m", "googlenet_fused", "--backend", "triton",
                          "--device", "cpu", "--batch", "3", "--image-size", "40"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "cannot run an input of shape (3, 3, 40, 40)" in res.stderr
