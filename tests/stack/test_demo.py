"""`tritonfleet demo` end to end: real servers, real requests, a report, and nothing left running."""

import subprocess
import sys

import pytest

from tritonfleet.paths import DEFAULT_STACK, REPO_ROOT

pytestmark = pytest.mark.slow


def test_demo_prints_real_results_and_stops_everything(tmp_path):
    workdir = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "tritonfleet.cli", "demo", "--stack", str(DEFAULT_STACK), "--workdir", str(workdir)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "Triton servers ready" in out
    assert "tritonfleet demo" in out and "p99 ms" in out
    assert "output PIXELS shape (1, 3, 224, 224)" in out
    assert "Stack stopped." in out
    leftover = subprocess.run(["pgrep", "-af", str(workdir)], capture_output=True, text=True).stdout
    assert not leftover, leftover
