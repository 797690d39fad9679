"""Read Triton's Prometheus metrics: counters per model, for showing how requests were spread."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


def counter_by_model(text: str, family: str) -> dict[str, float]:
    """Sum one `nv_inference_*` family over versions, keyed by model name."""
    totals: dict[str, float] = {}
    # prometheus_client's parser names counter samples `<family>_total`, whatever the exposition said.
    names = {family, f"{family}_total"}
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name in names:
                model = sample.labels.get("model", "")
                totals[model] = totals.get(model, 0.0) + sample.value
    return totals


def successes(url: str, model: str) -> float:
    """Successful inference requests of `model` on the server whose metrics live at `url`."""
    return counter_by_model(scrape(url), "nv_inference_request_success").get(model, 0.0)
