"""The pods the gateway forwards to: one channel each, their health and load, and the pick.

A `Backend` is one Triton pod (host:port) with one HTTP/2 channel, its outstanding-request count and
latency average (what the picker reads), whether it is admitted (live and not ejected) and which models
are READY on it (what health checks write). `BackendPool` holds the current set, as discovery reports
it, and answers "which pod for this model" with the picker, honouring the per-pod in-flight limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from gateway.routing import policy
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics

log = logging.getLogger("tritonfleet.gateway")

SERVICE = "/inference.GRPCInferenceService/"

def channel_options(keepalive_time_s: float, keepalive_timeout_s: float) -> list[tuple[str, int]]:
    """grpcio options of the channels to pods: tensors of any size the pods accept, and keepalive pings,
    also while no call is open, so that a silently dead pod is noticed by the transport too. Reconnect
    attempts back off to 2 s at most, not grpcio's 120 s: the health checks run on these channels, and
    a pod restarted after a minute down was taken back 15 s after it was ready (bench/faults, kill -9)."""
    return [
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


# A model's first answers on a pod include its cold start (a Python-backend stub's first call is
# slow): they are not counted. The next SETTLING_SAMPLES are averaged before the picker sees them,
# so that one unlucky answer does not mark a pod slower than it is (and avoided, hence unmeasured).
WARMUP_SAMPLES = 5
SETTLING_SAMPLES = 5


class NoBackendError(Exception):
    """No admitted pod has the model READY; carries the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class Backend:
    address: str
    channel: grpc.aio.Channel
    inflight: int = 0
    # Per model, the latency average per load level: index k for requests sent with k others
    # outstanding here (any model); the picker reads `latency_by_load`, which holds a model's
    # levels once they have settled (see SETTLING_SAMPLES). And how many answers were seen.
    latency_by_load: dict[str, list[float]] = field(default_factory=dict)
    latency_levels: dict[str, list[float]] = field(default_factory=dict)
    latency_samples: dict[str, int] = field(default_factory=dict)
    last_pick: int = 0
    # Health: live from ServerLive; server_ready from ServerReady, recorded only (false while any model
    # loads, with Triton's strict readiness); ready models from the per-model checks; ejection from failures.
    live: bool = False
    server_ready: bool = False
    ready_models: frozenset[str] = frozenset()
    known_models: frozenset[str] = frozenset()
    ejected_until: float = 0.0
    consecutive_failures: int = 0
    terminating: bool = False
    # The client streams' upstream streams to this pod (`routing.stream_upstreams.PodStream`), told
    # to let go when the pod leaves: Triton does not exit on SIGTERM while a stream to it is open.
    pod_streams: set = field(default_factory=set, repr=False)
    _calls: dict = field(default_factory=dict, repr=False)

    def leaving(self) -> None:
        """The pod takes no new requests (terminating, gone from discovery, or no longer live): the
        upstream streams on it close once their messages are answered."""
        for pod_stream in list(self.pod_streams):
            pod_stream.let_go()

    @property
    def admitted(self) -> bool:
        return self.live and not self.terminating and time.monotonic() >= self.ejected_until

    def unary(self, method: str):
        """A raw-bytes unary call object for `method` on this pod (cached: building one is not free)."""
        call = self._calls.get(method)
        if call is None:
            call = self._calls[method] = self.channel.unary_unary(SERVICE + method)
        return call

    def stream(self, method: str):
        call = self._calls.get(("stream", method))
        if call is None:
            call = self._calls[("stream", method)] = self.channel.stream_stream(SERVICE + method)
        return call


class BackendPool:
    def __init__(self, metrics: GatewayMetrics, max_inflight: int = 0, queue_timeout_s: float = 1.0,
                 eject_base_s: float = 0.5, eject_max_s: float = 30.0,
                 options: list[tuple[str, int]] | None = None,
                 credentials: grpc.ChannelCredentials | None = None):
        self.metrics = metrics
        self.credentials = credentials  # TLS to the pods; None: plaintext
        self.channel_options = options if options is not None else channel_options(
            GatewayConfig.keepalive_time_s, GatewayConfig.keepalive_timeout_s)  # the configuration's defaults
        self.max_inflight = max_inflight
        self.queue_timeout_s = queue_timeout_s
        self.eject_base_s = eject_base_s
        self.eject_max_s = eject_max_s
        self.backends: dict[str, Backend] = {}
        self._picks = 0
        # Every model any pod has listed: a request for one of these that no pod has ready is
        # UNAVAILABLE (worth retrying), for any other model NOT_FOUND.
        self.seen_models: set[str] = set()
        self._candidates: dict[str, list[Backend]] = {}
        self._room = asyncio.Event()
        # Told of each pod that leaves the fleet (the front door closes its connection to it).
        self.removal_listeners: list[Callable[[Backend], None]] = []
        # Awaited after each round of health checks (the gateway's readiness is published then).
        self.health_listeners: list[Callable[[], Awaitable[None]]] = []

    # ---- membership (discovery) -------------------------------------------------------------

    def set_addresses(self, addresses: set[str], terminating: set[str] = frozenset()) -> None:
        """Make the pool match discovery: new pods are added (not admitted until healthy), gone pods removed."""
        for address in addresses - self.backends.keys():
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self.channel_options)
            else:
                channel = grpc.aio.secure_channel(address, self.credentials, options=self.channel_options)
            self.backends[address] = Backend(address=address, channel=channel)
            log.info("backend added", extra={"backend": address})
        for address in set(self.backends) - addresses:
            backend = self.backends.pop(address)
            log.info("backend removed", extra={"backend": address})
            self.metrics.forget_backend(address)
            # Requests already on the way finish on the old channel; it closes after a grace period.
            asyncio.get_running_loop().create_task(backend.channel.close(grace=30))
            backend.leaving()
            for listener in self.removal_listeners:
                listener(backend)
        for address, backend in self.backends.items():
            was_terminating, backend.terminating = backend.terminating, address in terminating
            if backend.terminating and not was_terminating:
                backend.leaving()
        self.invalidate()

    def invalidate(self) -> None:
        """Health or membership changed: recompute candidate lists on next use."""
        self._candidates.clear()
        self._room.set()

    # ---- picking ------------------------------------------------------------------------------

    def candidates(self, model: str) -> list[Backend]:
        found = self._candidates.get(model)
        if found is None:
            now = time.monotonic()
            found = [
                b for b in self.backends.values()
                if b.live and not b.terminating and now >= b.ejected_until and model in b.ready_models
            ]
            self._candidates[model] = found
            # An ejection ends by time, not by an event: recheck soon after the earliest one ends.
            if any(now < b.ejected_until for b in self.backends.values()):
                asyncio.get_running_loop().call_later(
                    min(b.ejected_until for b in self.backends.values() if now < b.ejected_until) - now + 0.001,
                    self.invalidate,
                )
        return found

    def _pick_now(self, model: str, exclude: frozenset[Backend]) -> Backend | None:
        found = self.candidates(model)
        if exclude:
            found = [b for b in found if b not in exclude]
        if self.max_inflight:
            found = [b for b in found if b.inflight < self.max_inflight]
        return policy.pick(found, model, clock=self._picks)

    def try_acquire(self, model: str, exclude: frozenset[Backend] = frozenset()) -> Backend | None:
        """`acquire` without waiting: a pod counted as outstanding now, or None when none has room."""
        backend = self._pick_now(model, exclude)
        return None if backend is None else self._take(backend)

    async def acquire(self, model: str, exclude: frozenset[Backend] = frozenset()) -> Backend:
        """Pick a pod for one request and count it as outstanding there; pair with `release`."""
        return self.try_acquire(model, exclude) or self._take(await self._wait_for_room(model, exclude))

    def _take(self, backend: Backend) -> Backend:
        self._picks += 1
        backend.last_pick = self._picks
        self.hold(backend)
        return backend

    async def _wait_for_room(self, model: str, exclude: frozenset[Backend]) -> Backend:
        candidates = [b for b in self.candidates(model) if b not in exclude]
        if not candidates:
            if model in self.seen_models or not self.backends:
                raise NoBackendError(grpc.StatusCode.UNAVAILABLE, f"no ready backend has model '{model}'")
            raise NoBackendError(grpc.StatusCode.NOT_FOUND, f"model '{model}' is not served by any backend")
        # Every candidate is at its in-flight limit: wait a bounded time for one to have room.
        deadline = time.monotonic() + self.queue_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoBackendError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"every backend with model '{model}' has {self.max_inflight} requests in flight",
                )
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            backend = self._pick_now(model, exclude)
            if backend is not None:
                return backend

    def hold(self, backend: Backend) -> None:
        """Count one more outstanding request on a pod chosen earlier (a sequence's pod)."""
        backend.inflight += 1
        self.metrics.inflight_gauge(backend.address).inc()

    def release(self, backend: Backend, latency_s: float | None, ahead: int = 0, model: str = "") -> None:
        """The end of a request on `backend`; when it succeeded, its `latency_s` for `model`, sent
        behind `ahead` others.

        The latency average is kept per load level (`ahead`): how a pod's latency grows with its queue
        depends on how many requests it serves at once, which only measuring shows.
        """
        backend.inflight -= 1
        self.metrics.inflight_gauge(backend.address).dec()
        if latency_s is not None:
            backend.consecutive_failures = 0
            samples = backend.latency_samples[model] = backend.latency_samples.get(model, 0) + 1
            if samples > WARMUP_SAMPLES:
                levels = backend.latency_levels.get(model)
                if levels is None:
                    levels = backend.latency_levels[model] = [0.0] * policy.LOAD_LEVELS
                level = min(ahead, policy.LOAD_LEVELS - 1)
                levels[level] = policy.latency_average(levels[level], latency_s)
                if samples == WARMUP_SAMPLES + SETTLING_SAMPLES:
                    backend.latency_by_load[model] = levels
        if self.max_inflight:
            self._room.set()

    # ---- passive health -----------------------------------------------------------------------

    def drop_model(self, backend: Backend, model: str) -> None:
        """The pod said it lost `model` since the last health check: send it none of its requests."""
        backend.ready_models = backend.ready_models - {model}
        self.invalidate()

    def eject(self, backend: Backend, reason: str) -> None:
        """Take a pod out after a connection failure; it returns after a backoff and a passing check."""
        if time.monotonic() < backend.ejected_until:
            return
        backend.consecutive_failures += 1
        backoff = min(self.eject_base_s * 2 ** (backend.consecutive_failures - 1), self.eject_max_s)
        backend.ejected_until = time.monotonic() + backoff
        backend.live = False
        self.metrics.ejections.labels(backend.address).inc()
        self.metrics.set_backend_state(backend.address, False, set(), set(backend.known_models))
        log.warning("backend ejected", extra={"backend": backend.address, "reason": reason,
                                              "backoff_s": round(backoff, 3)})
        self.invalidate()

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.channel.close()
        self.backends.clear()
