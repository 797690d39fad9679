"""Fixtures for the observability tests: a real Prometheus on loopback with the local stack's config."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from observability.selectors import JOBS
from tritonfleet.processes import ChildProcess
from tritonfleet.triton_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy/prometheus"


class PrometheusProcess:
    """A real /usr/bin/prometheus run from deploy/prometheus/prometheus.yml; targets come from the
    file_sd files the local stack writes (targets/<job>.json), so they can change while it runs."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child: ChildProcess | None = None
        (workdir / "targets").mkdir(parents=True, exist_ok=True)
        for name in ("prometheus.yml", "tritonfleet.rules.yaml"):
            shutil.copy(PROMETHEUS_DIR / name, workdir / name)

    def set_targets(self, job: str, addresses: list[str]) -> None:
        path = self.workdir / "targets" / f"{job}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": addresses}]))
        tmp.replace(path)  # atomic, so Prometheus never reads half a file

    def start(self) -> None:
        self.child = ChildProcess(
            "prometheus",
            ["prometheus", f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            self.workdir / "prometheus.log",
        )
        try:
            self.child.wait_until(self.is_ready, 30.0, interval=0.2)
        except BaseException:
            self.stop()
            raise

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    if not shutil.which("prometheus"):
        pytest.skip("the prometheus binary is not installed (make system installs it)")
    server = PrometheusProcess(tmp_path_factory.mktemp("prometheus"))
    for job in JOBS:
        server.set_targets(job, [])
    server.start()
    yield server
    server.stop()
