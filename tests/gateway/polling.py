"""Waiting on what the gateway and the pods report, instead of on the clock: bounded polls of the
gateway's Prometheus metrics and of any other condition."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.helpers import served_counts


def wait_for(condition, timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Whether `condition()` came true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def samples(metrics_url: str, name: str) -> list:
    """The samples called `name` the endpoint exports now (prometheus_client's Sample: labels, value)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == name]


def metric(metrics_url: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    return sum(sample.value for sample in samples(metrics_url, name)
               if all(sample.labels.get(k) == v for k, v in labels.items()))


def served_since(servers, model: str, before: list[int], total: int, timeout: float = 20.0) -> list[int]:
    """Each server's successful inferences of `model` since `before`, read once they add up to `total`
    at least: a server counts a request in its statistics a moment after it has answered it."""

    def deltas() -> list[int]:
        return [now - was for was, now in zip(before, served_counts(servers, model))]

    wait_for(lambda: sum(deltas()) >= total, timeout)
    return deltas()
