"""A small client of Prometheus' HTTP API (instant and range queries), for the PNG renderer and tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request


class PrometheusError(RuntimeError):
    """Prometheus refused a query or could not be reached."""


class PrometheusAPI:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            # Prometheus answers a bad query with 400 and a JSON error naming the problem.
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"{path} {params.get('query', '')!r}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params.get('query', '')!r}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self._get("/api/v1/query", {"query": expr})["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self._get("/api/v1/query_range",
                         {"query": expr, "start": start, "end": end, "step": step})["result"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts", {})["alerts"]
