"""The scale-out command end to end on CPU: 1, then 2 real Triton servers behind the real gateway
(2 worker processes), the project's load generator through it, and the JSON and table it writes.

The command (bench.gpu.scale_out) runs as the user runs it, in a subprocess; the figures are read
back from its files, so what is checked is what a reader of the table gets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tritonfleet.paths import MODEL_REPOSITORY, REPO_ROOT
from tritonfleet.triton_install import TritonInstall

pytestmark = pytest.mark.slow

COMMAND = ["--cpu", "--gpus", "1", "2", "--repo", str(MODEL_REPOSITORY), "--models", "image_preprocess",
           "--image-model", "image_preprocess", "--image-source", "synthetic", "--resolution", "64x48",
           "--image-runs", "1:2", "--duration", "2", "--load-warmup", "0.5", "--warmup-s", "1",
           "--gateway-workers", "2", "--load-workers", "1", "--budget-s", "200", "--image-slo-ms", "60000"]


@pytest.fixture(scope="module")
def scale_out(tmp_path_factory) -> dict:
    TritonInstall.locate().check_stub_libraries()
    root = tmp_path_factory.mktemp("scale-out")
    out = root / "out"
    done = subprocess.run([sys.executable, "-m", "bench.gpu.scale_out", *COMMAND, "--workdir", str(root / "work"),
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=270)
    assert done.returncode == 0, done.stderr[-3000:]
    raw = json.loads((out / "fleet-scale.json").read_text())
    return {"data": json.loads((out / "scale_out.json").read_text()), "table": (out / "scale_out.md").read_text(),
            "runs": {run["label"]: run for run in raw["runs"]}}


def row(scale_out: dict, servers: int) -> dict:
    rows = [r for r in scale_out["data"]["rows"] if r["servers"] == servers]
    assert len(rows) == 1, scale_out["data"]["rows"]
    return rows[0]


def table_rows(text: str) -> dict[int, list[str]]:
    """The image table's rows by server count, each as its cells."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def test_each_step_ran_without_errors_on_its_servers_only(scale_out):
    for servers in (1, 2):
        measured = row(scale_out, servers)
        assert measured["rc"] == 0 and measured["errors"] == 0
        assert measured["gateway_workers"] == 2
        assert measured["images_per_s"] > 0
    # With one server behind the gateway, the second (already running) took none of its requests.
    assert row(scale_out, 1)["requests_per_server"]["triton-1"] == 0
    assert row(scale_out, 1)["outside_step"] == 0


def test_the_gateway_spread_the_requests_over_both_servers(scale_out):
    measured = row(scale_out, 2)
    counts = measured["requests_per_server"]
    assert set(counts) == {"triton-0", "triton-1"}
    assert all(count > 0 for count in counts.values()), counts
    even = sum(counts.values()) / 2
    assert measured["spread_pct"] == pytest.approx(max(abs(c - even) for c in counts.values()) / even * 100, abs=0.05)


def test_efficiency_is_throughput_over_n_times_the_one_server_throughput(scale_out):
    one, two = row(scale_out, 1), row(scale_out, 2)
    for measured in (one, two):
        # images/s is the load generator's own figure for that run (requests/s x images per request).
        summary = scale_out["runs"][f"scale/{measured['label']}"]["summary"]
        assert measured["images_per_s"] == pytest.approx(summary["throughput"] * measured["batch"], abs=0.05)
    assert one["efficiency"] == 1.0
    assert two["efficiency"] == pytest.approx(two["images_per_s"] / (2 * one["images_per_s"]), abs=5e-4)


def test_the_gateways_cpu_per_request_is_recorded(scale_out):
    for servers in (1, 2):
        measured = row(scale_out, servers)
        assert measured["gateway_cpu_s"] > 0
        assert measured["gateway_requests"] == sum(measured["requests_per_server"].values())
        assert measured["gateway_cpu_us_per_request"] == pytest.approx(
            measured["gateway_cpu_s"] / measured["gateway_requests"] * 1e6, rel=0.01)
        assert 0 < measured["gateway_busiest_process"]


def test_the_table_shows_every_steps_figures(scale_out):
    table = table_rows(scale_out["table"])
    assert set(table) == {1, 2}, scale_out["table"]
    for servers, cells in table.items():
        measured = row(scale_out, servers)
        assert cells[1] == "cpu" and cells[2] == "2"
        assert cells[5] == f"{measured['images_per_s']:,.1f}"
        assert cells[9] == f"{measured['efficiency']:.2f}"
        per_server = list(measured["requests_per_server"].values())[:servers]
        assert cells[10] == " / ".join(f"{n:,}" for n in per_server)
        assert cells[11] == f"{measured['spread_pct']:.1f}"
        assert cells[12] == f"{measured['gateway_cpu_us_per_request']:,.0f}"
        assert measured["within_slo"] is (measured["p99_ms"] <= 60000) and cells[14] == "yes"
    assert "CPU servers, no GPU" in scale_out["table"]
