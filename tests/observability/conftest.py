"""Fixtures for the observability tests: a real Prometheus on loopback with the local stack's config."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

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
        self.process: subprocess.Popen | None = None
        (workdir / "targets").mkdir(parents=True, exist_ok=True)
        for name in ("prometheus.yml", "tritonfleet.rules.yaml"):
            shutil.copy(PROMETHEUS_DIR / name, workdir / name)

    def set_targets(self, job: str, addresses: list[str]) -> None:
        path = self.workdir / "targets" / f"{job}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": addresses}]))
        tmp.replace(path)  # atomic, so Prometheus never reads half a file

    def start(self) -> None:
        log = open(self.workdir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready in 30 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    if not shutil.which("prometheus"):
        pytest.skip("the prometheus binary is not installed (make system installs it)")
    server = PrometheusProcess(tmp_path_factory.mktemp("prometheus"))
    for job in ("triton", "gateway", "loadtest"):
        server.set_targets(job, [])
    server.start()
    yield server
    server.stop()
