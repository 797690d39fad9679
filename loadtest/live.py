"""Live counters while a run is going: workers send small deltas, the parent serves them to Prometheus.

Names follow docs/METRICS.md (`tritonfleet_loadtest_*`). Workers cannot share a prometheus-client
registry across processes, so each one counts into a `LiveDelta` (bucket counts, not raw latencies)
and ships it every half second; the parent adds the deltas up and exposes them through a collector.
"""

from __future__ import annotations

import bisect
from collections import Counter

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from loadtest.records import DROPPED, OK, RequestResult

BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LiveDelta:
    """What one worker saw since its last report (warm-up included: this is the live view)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.buckets = [0] * (len(BUCKETS_S) + 1)
        self.latency_sum_s = 0.0
        self.late = 0
        self.dropped = 0
        self.streams_active = 0

    def record(self, result: RequestResult) -> None:
        if result.status == DROPPED:
            self.dropped += 1
            return
        self.statuses[result.status] += 1
        if result.status == OK:
            latency_s = result.latency_ns / 1e9
            self.buckets[bisect.bisect_left(BUCKETS_S, latency_s)] += 1
            self.latency_sum_s += latency_s
            self.late += result.late

    def take(self) -> dict:
        data = {"statuses": dict(self.statuses), "buckets": self.buckets, "sum": self.latency_sum_s,
                "late": self.late, "dropped": self.dropped, "streams_active": self.streams_active}
        streams = self.streams_active
        self.reset()
        self.streams_active = streams
        return data


class LiveMetrics:
    """Totals over all workers, served as Prometheus metrics and read by the progress display."""

    def __init__(self, workload: str, model: str):
        self.workload = workload
        self.model = model
        self.statuses: Counter[str] = Counter()
        self.buckets = [0] * (len(BUCKETS_S) + 1)
        self.latency_sum_s = 0.0
        self.late = 0
        self.dropped = 0
        self.streams_by_worker: dict[int, int] = {}
        self.generator_cpu_s = 0.0  # filled in as workers finish

    def add(self, worker: int, delta: dict) -> None:
        self.statuses.update(delta["statuses"])
        self.buckets = [a + b for a, b in zip(self.buckets, delta["buckets"])]
        self.latency_sum_s += delta["sum"]
        self.late += delta["late"]
        self.dropped += delta["dropped"]
        self.streams_by_worker[worker] = delta["streams_active"]

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return self.answered - self.statuses.get(OK, 0)

    def collect(self):
        labels = [self.workload, self.model]
        requests = CounterMetricFamily("tritonfleet_loadtest_requests", "requests (frames) sent and answered, by outcome",
                                       labels=["workload", "model", "status"])
        for status, count in sorted(self.statuses.items()):
            requests.add_metric([*labels, "ok" if status == OK else status], count)
        yield requests
        cumulative, buckets = 0, []
        for bound, count in zip((*BUCKETS_S, float("inf")), self.buckets):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        latency = HistogramMetricFamily("tritonfleet_loadtest_latency_seconds",
                                        "latency from each request's scheduled send time", labels=["workload", "model"])
        latency.add_metric(labels, buckets, self.latency_sum_s)
        yield latency
        if self.workload == "video":
            late = CounterMetricFamily("tritonfleet_loadtest_frames_late", "video frames answered after their 1/FPS deadline",
                                       labels=["model"])
            late.add_metric([self.model], self.late)
            yield late
            dropped = CounterMetricFamily("tritonfleet_loadtest_frames_dropped",
                                          "video frames not sent: the previous frame was still in flight", labels=["model"])
            dropped.add_metric([self.model], self.dropped)
            yield dropped
            active = GaugeMetricFamily("tritonfleet_loadtest_streams_active", "camera streams open", labels=["model"])
            active.add_metric([self.model], sum(self.streams_by_worker.values()))
            yield active


def serve_metrics(metrics: LiveMetrics, port: int, address: str = "127.0.0.1"):
    """Serve `metrics` on http://address:port/metrics; returns (server, thread) to shut down."""
    registry = CollectorRegistry()
    registry.register(metrics)
    return start_http_server(port, addr=address, registry=registry)
