"""The gateway's Prometheus metrics, exactly the names of docs/METRICS.md, on a port of their own.

With several worker processes, prometheus-client's multiprocess mode is used: each worker writes its
values to files in PROMETHEUS_MULTIPROC_DIR and the parent process serves the merged view. The
environment variable must be set before a worker creates its metrics, which `serve_multiprocess` and
the worker start-up in `server.py` take care of.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Latency buckets from 100 µs (the gateway's own share) up to 10 s (a slow model under load).
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    """The metric families, plus cached children so the hot path does no label lookups."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tritonfleet_gateway_requests", "Requests and stream messages finished, by gRPC status code",
            ["model", "backend", "method", "code"], registry=r,
        )
        self.duration = Histogram(
            "tritonfleet_gateway_request_duration_seconds", "Total time in the gateway",
            ["model", "method"], buckets=_BUCKETS, registry=r,
        )
        self.overhead = Histogram(
            "tritonfleet_gateway_overhead_seconds", "The gateway's own share of a request's time",
            ["model"], buckets=_BUCKETS, registry=r,
        )
        self.inflight = Gauge(
            "tritonfleet_gateway_inflight", "Requests outstanding at each backend",
            ["backend"], registry=r, multiprocess_mode="livesum",
        )
        self.backend_up = Gauge(
            "tritonfleet_gateway_backend_up", "1 when the backend is live and admitted",
            ["backend"], registry=r, multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "tritonfleet_gateway_backend_model_ready", "1 when the model is READY on that backend",
            ["backend", "model"], registry=r, multiprocess_mode="livemax",
        )
        self.retries = Counter(
            "tritonfleet_gateway_retries", "Requests retried on another backend", ["model"], registry=r
        )
        self.ejections = Counter(
            "tritonfleet_gateway_ejections", "Passive ejections", ["backend"], registry=r
        )
        self.active_streams = Gauge(
            "tritonfleet_gateway_active_streams", "Open ModelStreamInfer streams",
            registry=r, multiprocess_mode="livesum",
        )
        self.upstream_streams = Gauge(
            "tritonfleet_gateway_upstream_streams",
            "Open upstream ModelStreamInfer streams at each backend (one per client stream that sent it messages)",
            ["backend"], registry=r, multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "tritonfleet_gateway_queued_requests", "Requests waiting for a backend with room (every one at its in-flight limit)",
            registry=r, multiprocess_mode="livesum",
        )
        self.client_connections = Gauge(
            "tritonfleet_gateway_client_connections", "Open client connections",
            registry=r, multiprocess_mode="livesum",
        )
        self.client_streams = Gauge(
            "tritonfleet_gateway_client_streams", "Open client calls (HTTP/2 streams) of every kind",
            registry=r, multiprocess_mode="livesum",
        )
        self.buffered_bytes = Gauge(
            "tritonfleet_gateway_buffered_bytes", "Request bytes received from clients and held by the gateway",
            registry=r, multiprocess_mode="livesum",
        )
        self.withheld_bytes = Gauge(
            "tritonfleet_gateway_withheld_bytes",
            "Received request bytes not granted back to clients yet (over max_buffered_bytes)",
            registry=r, multiprocess_mode="livesum",
        )
        self.refusals = Counter(
            "tritonfleet_gateway_refusals", "Client calls refused at the edge, by reason", ["reason"], registry=r
        )
        self.disconnects = Counter(
            "tritonfleet_gateway_client_disconnects", "Client connections the gateway ended, by reason",
            ["reason"], registry=r,
        )
        self.bytes = Counter(
            "tritonfleet_gateway_bytes", "Payload bytes through the gateway", ["direction"], registry=r
        )
        self.tls_reloads = Counter(
            "tritonfleet_gateway_tls_reloads", "Changes of the TLS certificate, key or client CA files, by outcome",
            ["outcome"], registry=r,
        )
        self.tls_handshake_failures = Counter(
            "tritonfleet_gateway_tls_handshake_failures",
            "Client connections whose TLS handshake failed (the connection closed), by reason", ["reason"], registry=r,
        )
        self.access = Counter(
            "tritonfleet_gateway_access", "Calls and stream messages checked against the API keys, by key and outcome",
            ["key", "outcome"], registry=r,
        )
        self.api_keys_reloads = Counter(
            "tritonfleet_gateway_api_keys_reloads", "Changes of the API-keys file, loaded or failed (old keys kept)",
            ["outcome"], registry=r,
        )
        self.bytes_in = self.bytes.labels("in")
        self.bytes_out = self.bytes.labels("out")
        self._children: dict[tuple, object] = {}
        # (model, backend, method, code) -> its request counter, duration and overhead histograms.
        self._finished: dict[tuple, tuple] = {}

    def _child(self, family, *labels):
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def observe(self, model: str, backend: str, method: str, code: str, total_s: float, backend_s: float):
        """One finished request or stream message."""
        key = (model, backend, method, code)
        children = self._finished.get(key)
        if children is None:
            children = self._finished[key] = (self._child(self.requests, *key), self._child(self.duration, model, method),
                                              self._child(self.overhead, model))
        children[0].inc()
        children[1].observe(total_s)
        if backend_s > 0:
            children[2].observe(max(total_s - backend_s, 0.0))

    def count(self, model: str, backend: str, method: str, code: str) -> None:
        """A finished stream message whose own duration is not known (one of many on an upstream stream)."""
        self._child(self.requests, model, backend, method, code).inc()

    def inflight_gauge(self, backend: str):
        return self._child(self.inflight, backend)

    def set_backend_state(self, backend: str, up: bool, ready_models: set[str], known_models: set[str]):
        self._child(self.backend_up, backend).set(1 if up else 0)
        for model in known_models:
            self._child(self.model_ready, backend, model).set(1 if up and model in ready_models else 0)

    def forget_backend(self, backend: str) -> None:
        """A backend that discovery dropped: its series go away instead of freezing at the last value."""
        for family in (self.inflight, self.backend_up, self.upstream_streams):
            try:
                family.remove(backend)
            except KeyError:
                pass
        self._finished = {k: v for k, v in self._finished.items() if k[1] != backend}
        for key in [k for k in self._children if backend in k[1:]]:
            if key[0] == id(self.model_ready):
                self.model_ready.remove(*key[1:])
            del self._children[key]


def serve(metrics: GatewayMetrics, address: str, port: int):
    """Serve this process's registry; returns the server so tests can stop it."""
    server, _thread = start_http_server(port, addr=address, registry=metrics.registry)
    return server


def serve_multiprocess(address: str, port: int):
    """In the parent of several workers: serve the merged values of every worker's files."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server
