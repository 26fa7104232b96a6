"""The command line: summary numbers and the main job."""
import re
import subprocess
import sys

import pytest

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
