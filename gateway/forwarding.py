"""Forwarding one request to one pod, as bytes: pick, call, count, retry when it is safe.

A request is retried on another pod only when it cannot have reached a model: the pod could not be
reached (UNAVAILABLE from the transport) or the pod said it does not have the model (it was unloaded
or is not ready yet). Requests in a sequence are never retried (the state lives on their pod). Retries
draw from a budget, so a sick fleet is not hit with a multiple of its load.

Only a pod that cannot be reached is ejected. UNAVAILABLE is also what a model itself answers when it
is out of capacity (Triton's Python backend has no RESOURCE_EXHAUSTED): that answer goes to the client
as it is, and the pod stays in rotation for everyone else.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from tritonclient.grpc import service_pb2

from gateway.backends import Backend, BackendPool, NoBackendError
from gateway.metrics import GatewayMetrics

# Metadata that belongs to one HTTP/2 hop and is set again by the gateway's own channel.
_HOP_HEADERS = frozenset({"user-agent", "te", "content-type", "host", "connection"})

# Triton's words when a pod does not have the model (as opposed to a failure inside the model).
_MODEL_MISSING = ("Request for unknown model", "is not found", "is not ready", "unavailable model")


class UpstreamError(Exception):
    """A request that ended with a non-OK status, from a pod or from the gateway itself."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata=None):
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


class RetryBudget:
    """Token bucket: each request adds `ratio` tokens (up to `reserve`), each retry takes one."""

    def __init__(self, ratio: float, reserve: int):
        self.ratio = ratio
        self.capacity = float(max(reserve, 1))
        self.tokens = self.capacity

    def deposit(self) -> None:
        self.tokens = min(self.tokens + self.ratio, self.capacity)

    def withdraw(self) -> bool:
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def upstream_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The client's metadata minus per-hop headers, to send on to the pod."""
    return tuple(
        (key, value) for key, value in context.invocation_metadata() or ()
        if key not in _HOP_HEADERS and not key.startswith((":", "grpc-"))
    )


def says_model_missing(code: grpc.StatusCode, details: str) -> bool:
    """Whether a pod's error status means it does not have the model (worth another pod)."""
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND) and any(
        words in details for words in _MODEL_MISSING
    )


def model_missing(exc: grpc.aio.AioRpcError) -> bool:
    return says_model_missing(exc.code(), exc.details() or "")


_SERVER_LIVE = service_pb2.ServerLiveRequest().SerializeToString()
# How long a pod has to answer ServerLive after an UNAVAILABLE before it counts as unreachable. A
# dead pod fails the probe at once (refused or reset), so the bound only matters for a live pod on a
# busy node, which must not be ejected for answering slowly; a frozen pod is caught by keepalive too.
PROBE_TIMEOUT_S = 3.0


async def unreachable(backend: Backend, exc: grpc.aio.AioRpcError) -> bool:
    """Whether an UNAVAILABLE call means the pod cannot be reached (connection refused, reset or closed,
    GOAWAY, keepalive timeout), as opposed to the pod itself answering UNAVAILABLE (its model refused).

    grpcio (1.85) does not say which side a status came from. Its debug string is "UNAVAILABLE:<details>"
    for both (older releases said "Error received from peer" for a lost socket too: grpc/grpc#20360),
    and its details for a lost connection are core's own wording ("Stream removed (Socket closed)",
    "failed to connect to all addresses; ..."), which no release promises. The channel's state lags
    the call's end: right after a SIGKILLed pod's calls fail, `get_state()` still reads READY most of
    the time (measured: 7 of 10 kills, READY for 1-8 ms more), so it would keep dead pods in rotation.
    So the pod is asked, on the same channel: a pod that answers ServerLive was reachable.
    """
    if exc.code() != grpc.StatusCode.UNAVAILABLE or model_missing(exc):
        return False
    try:
        await backend.unary("ServerLive")(_SERVER_LIVE, timeout=PROBE_TIMEOUT_S)
    except grpc.aio.AioRpcError:
        return True
    return False


class Forwarder:
    def __init__(self, pool: BackendPool, metrics: GatewayMetrics, retry_attempts: int, budget: RetryBudget):
        self.pool = pool
        self.metrics = metrics
        self.retry_attempts = retry_attempts
        self.budget = budget

    async def unary(self, method: str, model: str, data: bytes, metadata, timeout: float | None,
                    retryable: bool = True, metric_method: str | None = None,
                    pinned: Backend | None = None) -> bytes:
        """Send `data` to a pod with `model` READY and return the reply bytes, or raise UpstreamError.

        `pinned` sends to that pod only, without retries: a sequence's pod holds its state.
        """
        metric_method = metric_method or method
        started = time.perf_counter()
        tried: frozenset[Backend] = frozenset()
        self.budget.deposit()
        self.metrics.bytes_in.inc(len(data))
        while True:
            try:
                if pinned is not None:
                    backend, retryable = pinned, False
                    self.pool.hold(backend)
                else:
                    backend = await self.pool.acquire(model, tried)
            except NoBackendError as exc:
                self._count(model, "none", metric_method, exc.code, started, 0.0)
                raise UpstreamError(exc.code, str(exc)) from None
            sent = time.perf_counter()
            ahead = backend.inflight - 1
            latency = None
            failure: grpc.aio.AioRpcError | None = None
            try:
                remaining = None if timeout is None else timeout - (sent - started)
                reply = await backend.unary(method)(data, metadata=metadata, timeout=remaining)
                latency = time.perf_counter() - sent
            except grpc.aio.AioRpcError as exc:
                failure = exc
            except asyncio.CancelledError:
                # The client went away or its deadline passed: the upstream call is cancelled with us.
                elapsed = time.perf_counter() - started
                code = (grpc.StatusCode.DEADLINE_EXCEEDED if timeout is not None and elapsed >= timeout
                        else grpc.StatusCode.CANCELLED)
                self._count(model, backend.address, metric_method, code, started, time.perf_counter() - sent)
                raise
            finally:
                self.pool.release(backend, latency, ahead, model)
            if failure is not None:
                worth_another_pod = await self._note_failure(backend, failure, model)
                if retryable and worth_another_pod and self._may_retry(len(tried), timeout, started):
                    self.metrics.retries.labels(model).inc()
                    tried = tried | {backend}
                    continue
                self._count(model, backend.address, metric_method, failure.code(), started,
                            time.perf_counter() - sent)
                raise UpstreamError(failure.code(), failure.details() or "", failure.trailing_metadata())
            self.metrics.bytes_out.inc(len(reply))
            self._count(model, backend.address, metric_method, grpc.StatusCode.OK, started, latency)
            return reply

    async def _note_failure(self, backend: Backend, exc: grpc.aio.AioRpcError, model: str) -> bool:
        """Passive health from one failed call; whether the call cannot have reached the model."""
        if model_missing(exc):
            self.pool.drop_model(backend, model)
            return True
        if await unreachable(backend, exc):
            self.pool.eject(backend, exc.details() or exc.code().name)
            return True
        return False

    def _may_retry(self, attempts: int, timeout: float | None, started: float) -> bool:
        if attempts >= self.retry_attempts:
            return False
        if timeout is not None and time.perf_counter() - started >= timeout:
            return False
        return self.budget.withdraw()

    def _count(self, model, backend, method, code: grpc.StatusCode, started: float, backend_s: float):
        self.metrics.observe(model, backend, method, code.name, time.perf_counter() - started, backend_s)
