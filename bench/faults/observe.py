"""What the gateway says while a fault runs: its metrics, polled on a thread, kept as a timeline, and
the moments a pod left and came back read from it."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

POLL_S = 0.05


def scrape(metrics_url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the gateway's metrics page: (name, sorted labels) → value."""
    text = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(sample: dict, name: str, **labels: str) -> float:
    return sum(value for (n, pairs), value in sample.items()
               if n == name and all(dict(pairs).get(k) == v for k, v in labels.items()))


@dataclass
class Point:
    t_ns: int  # monotonic, as the load's records
    sample: dict


class GatewayWatch:
    """Polls `metrics_url` every POLL_S until stopped; a poll that fails (the gateway gone) is skipped."""

    def __init__(self, metrics_url: str):
        self.metrics_url = metrics_url
        self.points: list[Point] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gateway-watch", daemon=True)

    def start(self) -> "GatewayWatch":
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.points.append(Point(time.monotonic_ns(), scrape(self.metrics_url)))
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_S)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def value_at(self, t_ns: int, name: str, **labels) -> float:
        """The metric at the last poll before `t_ns` (0 before the first)."""
        before = [p for p in self.points if p.t_ns <= t_ns]
        return total(before[-1].sample, name, **labels) if before else 0.0

    def delta(self, start_ns: int, end_ns: int, name: str, **labels) -> float:
        return self.value_at(end_ns, name, **labels) - self.value_at(start_ns, name, **labels)

    def first_after(self, t_ns: int, condition) -> int | None:
        """The time of the first poll after `t_ns` whose sample satisfies `condition(sample)`."""
        return next((p.t_ns for p in self.points if p.t_ns >= t_ns and condition(p.sample)), None)

    def time_out(self, backend: str, after_ns: int) -> int | None:
        """When the gateway stopped counting `backend` as up (health check or ejection), after `after_ns`."""
        return self.first_after(after_ns, lambda s: total(s, "tritonfleet_gateway_backend_up", backend=backend) == 0)

    def time_back(self, backend: str, after_ns: int) -> int | None:
        """When `backend` was up again and had finished a request more than at `after_ns`."""
        served_before = self.value_at(after_ns, "tritonfleet_gateway_requests_total", backend=backend, code="OK")
        return self.first_after(after_ns, lambda s: total(s, "tritonfleet_gateway_backend_up", backend=backend) == 1
                                and total(s, "tritonfleet_gateway_requests_total", backend=backend, code="OK")
                                > served_before)
