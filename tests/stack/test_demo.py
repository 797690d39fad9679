"""`tritonfleet demo` end to end: real servers behind the gateway, real requests, reports, nothing left."""

import json
import subprocess
import sys

import pytest

from tritonfleet.paths import DEFAULT_STACK, REPO_ROOT
from tritonfleet.processes import command_lines_containing

pytestmark = pytest.mark.slow


def test_demo_runs_image_and_video_load_through_the_gateway_and_stops_everything(tmp_path, triton_runs_here):
    workdir, reports = tmp_path / "demo", tmp_path / "reports"
    run = subprocess.run(
        [sys.executable, "-m", "tritonfleet.cli", "demo", "--stack", str(DEFAULT_STACK),
         "--workdir", str(workdir), "--reports", str(reports)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "2 Triton servers ready" in out
    assert "Requests go to the gateway" in out
    assert "image_pipeline on a 512x512 photograph, top-5:" in out
    assert "streams sustained at" in out
    assert "Stack stopped." in out
    for workload in ("image", "video"):
        result = json.loads((reports / f"demo-{workload}.json").read_text())
        shares = result["servers"]["requests"]
        assert len(shares) == 2 and all(count > 0 for count in shares.values()), shares
        assert "<svg" in (reports / f"demo-{workload}.html").read_text()
    leftover = command_lines_containing(str(workdir))
    assert not leftover, leftover
