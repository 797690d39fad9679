"""Each server's share of a run's requests, from the fleet's own Prometheus metrics.

A gateway metrics URL gives `tritonfleet_gateway_requests_total` by `backend`; Triton metrics URLs
give `nv_inference_request_success`, one server per URL. Scraped before and after the run; the
difference is what this run sent (other traffic on the same fleet would be counted too).
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

GATEWAY_METRIC = "tritonfleet_gateway_requests_total"
TRITON_METRIC = "nv_inference_request_success"


def scrape(url: str, model: str | None = None, timeout: float = 5.0) -> dict[str, float]:
    """{server: requests so far} from one metrics URL."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return parse(reply.read().decode(), url, model)


def parse(text: str, url: str, model: str | None = None) -> dict[str, float]:
    """Gateway text gives {backend: requests}; Triton text gives {url: successful requests}."""
    by_backend: dict[str, float] = {}
    triton_total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if model and sample.labels.get("model") not in (None, model):
                continue
            # The parser names counter samples `<family>_total` whether or not the exporter did.
            name = sample.name.removesuffix("_total")
            if name == GATEWAY_METRIC.removesuffix("_total"):
                backend = sample.labels.get("backend", "")
                by_backend[backend] = by_backend.get(backend, 0.0) + sample.value
            elif name == TRITON_METRIC:
                triton_total += sample.value
    if by_backend:
        return by_backend
    return {url: triton_total}


def snapshot(urls: list[str], model: str | None = None) -> dict[str, float]:
    counts: dict[str, float] = {}
    for url in urls:
        for server, value in scrape(url, model).items():
            counts[server] = counts.get(server, 0.0) + value
    return counts


def share(before: dict[str, float], after: dict[str, float], urls: list[str]) -> dict:
    """The servers block of a result: the source metric and requests per server during the run."""
    requests = {server: int(after[server] - before.get(server, 0.0)) for server in after}
    source = "gateway" if any(server not in urls for server in requests) else "triton"
    return {"source": source, "requests": requests}
