"""The HTML report opens in headless Chromium without script errors and draws its charts."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from loadtest.report import render_html
from loadtest.results import RunResult
from loadtest.run_config import ImageConfig, VideoConfig
from loadtest.shape import Shape
from tests.loadtest.test_records import recorded, synthetic_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("kind", ["image", "video"])
def test_report_renders_in_chromium_without_errors(tmp_path, kind):
    config = (VideoConfig("127.0.0.1:8001", "m", streams=3, fps=10, slo_ms=100) if kind == "video"
              else ImageConfig("127.0.0.1:8001", "m", shape=Shape.constant(200, 10), slo_ms=100))
    result = RunResult(kind, config, recorded(synthetic_results(3000, 9, kind == "video")), "2026-11-25T00:00:00+00:00",
                       {"source": "gateway", "requests": {"triton-0:8001": 1400, "triton-1:8001": 1600}})
    page = tmp_path / "report.html"
    page.write_text(render_html(result))
    # Nothing to fetch from the network (the SVG namespace is a name, never fetched).
    assert not re.search(r"(src|href)=|https?://", page.read_text().replace("http://www.w3.org/2000/svg", ""))

    run = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    console_errors = [line for line in run.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()
                      or "Uncaught" in line]
    assert not console_errors
    # The page's script ran and counted the drawn series of every chart.
    drawn = re.search(r'data-series="(\d+)"', run.stdout)
    assert drawn and int(drawn.group(1)) >= (8 if kind == "video" else 6)
    charts = set(re.findall(r'<svg class="chart" id="([a-z-]+)"', run.stdout))
    expected = {"latency-over-time", "percentiles", "throughput", "server-share"}
    assert expected | ({"frames"} if kind == "video" else set()) == charts

    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1100", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000
