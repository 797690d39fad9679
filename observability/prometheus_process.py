"""A real Prometheus scraping the gateway and the servers every second, that can be killed and started
again on the same port and data (what a restarted Prometheus pod does): the fault bench and its tests."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import yaml

from observability.prometheus_api import PrometheusAPI, PrometheusError
from tritonfleet.processes import ChildProcess, terminate
from tritonfleet.triton_server import LOOPBACK, free_port

SCRAPE_INTERVAL = "1s"


class PrometheusProcess:
    def __init__(self, workdir: Path, jobs: dict[str, list[str]]):
        """`jobs`: job name → metrics URLs (http://host:port/path, one path per job)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": SCRAPE_INTERVAL},
            "scrape_configs": [{"job_name": job, "metrics_path": urllib.parse.urlparse(urls[0]).path,
                                "static_configs": [{"targets": [urllib.parse.urlparse(u).netloc for u in urls]}]}
                               for job, urls in jobs.items()],
        }))
        self.api = PrometheusAPI(f"http://{LOOPBACK}:{self.port}", timeout=2)
        self.child: ChildProcess | None = None
        self.start()

    def start(self) -> None:
        self.child = ChildProcess("prometheus", [
            "prometheus", f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}"], self.workdir / "prometheus.log")
        self.child.wait_listening(f"{LOOPBACK}:{self.port}", timeout=30)

    def kill(self) -> None:
        """SIGKILL: no shutdown, as a node lost or an OOM kill."""
        terminate(self.child.process, grace=0)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def last_scrape(self, job: str) -> float:
        """The wall time of the newest `up` sample of `job` that says up (0 when none)."""
        try:
            found = self.api.query(f'timestamp(up{{job="{job}"}} == 1)')
        except PrometheusError:
            return 0.0
        return max((float(item["value"][1]) for item in found), default=0.0)

    def wait_scraped(self, job: str, after_wall: float, timeout: float = 30.0, now=time.monotonic_ns):
        """Until Prometheus holds a successful scrape of `job` taken after `after_wall`; `now()` then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.last_scrape(job) > after_wall:
                return now()
            time.sleep(0.1)
        raise TimeoutError(f"Prometheus scraped no {job} after {after_wall} within {timeout} s "
                           f"(log: {self.workdir / 'prometheus.log'})")
