"""One request's life in the gateway: which pod, whether to try another, what it did to the pod, what
is counted. Every call kind goes through it (a unary call, or one message of a stream).

    lifecycle = Lifecycle(router, model, "ModelInfer", deadline_s, request_bytes=n)
    backend = lifecycle.try_pick() or await lifecycle.pick()    # NoBackendError: answer exc.code
    lifecycle.sent(backend)                                     # the attempt starts (latency clock)
    ... the pod answers:          lifecycle.succeeded(reply_bytes) or lifecycle.ended(code, reply_bytes)
    ... the attempt failed before any answer reached the client:
        if lifecycle.failed(reason, retryable=..., model_missing=..., unreachable=...):
            pick again and resend (with lifecycle.timeout_header() as grpc-timeout)
        else: answer the client, then lifecycle.ended(code)
    ... the client reset the call or went away: lifecycle.cancelled()

The rules, in one place (modeled on Envoy's RetryState):
- retry only while no answer has started, on a pod not tried yet, at most `retry_attempts` extra times,
  within the retry budget, and while more than DEADLINE_MARGIN_S of the client's deadline is left;
  never for a pinned request (a sequence's state lives on its pod);
- a pod that could not be reached (connection failed or lost, reset stream, GOAWAY before the
  request) is ejected; a pod that says it does not have the model loses that model until the next
  health check; a model that answers UNAVAILABLE itself (out of capacity) leaves its pod in rotation,
  and that answer goes to the client as it is;
- every request is counted once (`tritonfleet_gateway_requests_total` and the histograms), with the
  pod of its last attempt; retries, bytes in and out alongside.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc

from gateway.fleet.backends import Backend, BackendPool, NoBackendError
from gateway.metrics import GatewayMetrics
from gateway.transport.messages import format_timeout

if TYPE_CHECKING:
    from gateway.fleet.upstreams import Upstreams
    from gateway.fleet.health import ModelCatalog
    from gateway.routing.sequences import SequencePins

# A client resets its stream when its deadline passes, and the gateway saw the call start a little
# after the client did: within this margin of the deadline, a call is late (no retry, counted as
# DEADLINE_EXCEEDED when the client gives up).
DEADLINE_MARGIN_S = 0.010

# Triton's words when a pod does not have the model (as opposed to a failure inside the model); a pod
# that got SIGTERM refuses new requests with "Server is stopping" before it unloads its models.
_MODEL_MISSING = ("Request for unknown model", "is not found", "is not ready", "unavailable model",
                  "Server is stopping")


def says_model_missing(code: grpc.StatusCode, details: str) -> bool:
    """Whether a pod's error status means it does not have the model (worth another pod)."""
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND) and any(
        words in details for words in _MODEL_MISSING
    )


def error_says_model_missing(details: str) -> bool:
    """The same for an `error_message` on a stream, which carries no status code."""
    return any(words in details for words in _MODEL_MISSING) and not says_version_missing(details)


def says_version_missing(details: str) -> bool:
    """Whether the pod lacks only the version the request named ("Request for unknown model: 'm'
    version 7 is not found"): the request's fault, answered as the pod said it, and the pod keeps the
    model for every other request (were it dropped, one such request would take the model off every pod
    until their next health checks)."""
    return "' version " in details


class DeadlineExceeded(NoBackendError):
    def __init__(self, message: str = "deadline exceeded before a retry"):
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, message)


class RetryBudget:
    """Token bucket: each request adds `ratio` tokens, each retry takes one. The bucket holds at most
    `reserve` plus `ratio` times the requests of the last `window_s` seconds, so a pod lost with many
    calls on it can have them all retried when the traffic has earned it (a bucket capped at the
    reserve alone failed all but the first ten), while retries stay bounded by `ratio` over the window."""

    def __init__(self, ratio: float, reserve: int, window_s: int = 10, clock=time.monotonic):
        self.ratio = ratio
        self.reserve = float(max(reserve, 1))
        self.tokens = self.reserve
        self._clock = clock
        self._slots = [0] * window_s  # requests per second of the window, in a ring
        self._slot_second = int(clock())
        self._window_requests = 0

    def _advance(self) -> None:
        second = int(self._clock())
        if second == self._slot_second:
            return
        for passed in range(self._slot_second + 1, min(second, self._slot_second + len(self._slots)) + 1):
            index = passed % len(self._slots)
            self._window_requests -= self._slots[index]
            self._slots[index] = 0
        self._slot_second = second

    @property
    def capacity(self) -> float:
        return self.reserve + self.ratio * self._window_requests

    def deposit(self) -> None:
        self._advance()
        self._slots[self._slot_second % len(self._slots)] += 1
        self._window_requests += 1
        self.tokens = min(self.tokens + self.ratio, self.capacity)

    def withdraw(self) -> bool:
        # Tokens are sums of `ratio`; the tolerance keeps 1,000 deposits of 0.2 worth 200 retries.
        if self.tokens >= 1 - 1e-9:
            self.tokens -= 1
            return True
        return False


class Router:
    """What the calls of one worker share: the pods and the connections to them, the retry rules and
    budget, the wait queue; and for the call handlers, the model catalog and the unary sequences."""

    def __init__(self, pool: BackendPool, metrics: GatewayMetrics, retry_attempts: int, budget: RetryBudget,
                 max_queued: int = 0, upstreams: "Upstreams | None" = None, catalog: "ModelCatalog | None" = None,
                 sequences: "SequencePins | None" = None):
        self.pool = pool
        self.upstreams = upstreams
        self.catalog = catalog
        self.sequences = sequences  # pod of each unary sequence (ModelInfer with a sequence_id)
        self.metrics = metrics
        self.retry_attempts = retry_attempts
        self.budget = budget
        # Requests waiting for a pod with room (every pod at max_inflight_per_backend); over `max_queued`
        # (0: no limit) a request is refused at once: shed early rather than left to time out.
        self.max_queued = max_queued
        self.queued = 0


class Lifecycle:
    """One request (a unary call or one stream message), from its first pick to its count."""

    __slots__ = ("router", "model", "method", "deadline_s", "pinned", "retryable", "started", "sent_at",
                 "backend", "address", "ahead", "tried", "done")

    def __init__(self, router: Router, model: str, method: str, deadline_s: float | None,
                 pinned: Backend | None = None, retryable: bool = True, request_bytes: int = 0):
        """`pinned` sends to that pod only, never retried; `model` "" is a request refused before
        routing (counted as model "unknown")."""
        self.router = router
        self.model = model
        self.method = method
        self.deadline_s = deadline_s
        self.pinned = pinned
        self.retryable = retryable and pinned is None
        self.started = time.perf_counter()
        self.sent_at = 0.0
        self.backend: Backend | None = None  # the pod of the attempt in flight (counted there)
        self.address = "none"  # the pod of the last attempt, for the count
        self.ahead = 0
        self.tried: frozenset[Backend] = frozenset()
        self.done = False
        router.budget.deposit()
        router.metrics.bytes_in.inc(request_bytes)

    # ---- picking ----------------------------------------------------------------------------------

    def try_pick(self) -> Backend | None:
        """A pod counted as outstanding now, or None when none has room right now."""
        pool = self.router.pool
        if self.pinned is not None:
            pool.hold(self.pinned)
            return self.pinned
        return pool.try_acquire(self.model, self.tried)

    async def pick(self) -> Backend:
        """A pod, waiting a bounded time for room; NoBackendError (with the status to answer) if none."""
        backend = self.try_pick()
        if backend is not None:
            return backend
        router = self.router
        if router.max_queued and router.queued >= router.max_queued:
            raise NoBackendError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"every backend with model '{self.model}' is at its in-flight limit and "
                                 f"{router.queued} requests already wait for room")
        router.queued += 1
        router.metrics.queued.inc()
        try:
            return await router.pool.acquire(self.model, self.tried)
        finally:
            router.queued -= 1
            router.metrics.queued.dec()

    def put_back(self, backend: Backend) -> None:
        """A pod picked but not used (the client went away while the request waited for it)."""
        self.router.pool.release(backend, None)

    def sent(self, backend: Backend) -> None:
        """The attempt on `backend` (from a pick) starts now."""
        self.backend = backend
        self.address = backend.address
        self.ahead = backend.inflight - 1
        self.sent_at = time.perf_counter()

    # ---- deadline ---------------------------------------------------------------------------------

    def time_left(self) -> float | None:
        if self.deadline_s is None:
            return None
        return self.deadline_s - (time.perf_counter() - self.started)

    def timeout_header(self) -> str | None:
        """The grpc-timeout of the next attempt: what is left of the client's deadline (None: no
        deadline); DeadlineExceeded when nothing worth an attempt is left."""
        left = self.time_left()
        if left is None:
            return None
        if left <= DEADLINE_MARGIN_S:
            raise DeadlineExceeded()
        return format_timeout(left)

    # ---- outcomes ---------------------------------------------------------------------------------

    def failed(self, reason: str, *, retryable: bool, model_missing: bool = False, unreachable: bool = True) -> bool:
        """The attempt in flight ended before any answer reached the client. Its pod is ejected when
        `unreachable`, or loses the model when `model_missing`. Returns whether to try another pod now
        (the retry is counted); when not, the caller answers the client and calls `ended`."""
        backend, self.backend = self.backend, None
        router = self.router
        if backend is None:
            return False
        router.pool.release(backend, None)
        if model_missing and self.model:
            router.pool.drop_model(backend, self.model)
        elif unreachable:
            router.pool.eject(backend, reason)
        self.tried = self.tried | {backend}
        left = self.time_left()
        if not (retryable and self.retryable and len(self.tried) <= router.retry_attempts
                and (left is None or left > DEADLINE_MARGIN_S) and router.budget.withdraw()):
            return False
        router.metrics.retries.labels(self.model).inc()
        return True

    def succeeded(self, reply_bytes: int = 0) -> None:
        self.ended(grpc.StatusCode.OK, reply_bytes)

    def ended(self, code: grpc.StatusCode, reply_bytes: int = 0) -> None:
        """The request is over with `code` (the client has its answer): release its pod, count it once."""
        if self.done:
            return
        self.done = True
        now = time.perf_counter()
        router = self.router
        if self.backend is not None:
            latency = now - self.sent_at if code is grpc.StatusCode.OK else None
            router.pool.release(self.backend, latency, self.ahead, self.model)
            self.backend = None
        router.metrics.bytes_out.inc(reply_bytes)
        backend_s = now - self.sent_at if self.sent_at else 0.0
        router.metrics.observe(self.model or "unknown", self.address, self.method, code.name,
                               now - self.started, backend_s)

    def cancelled(self) -> None:
        """The client reset the call or went away: DEADLINE_EXCEEDED when its deadline had come."""
        left = self.time_left()
        late = left is not None and left <= DEADLINE_MARGIN_S
        self.ended(grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED)
