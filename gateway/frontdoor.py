"""The gateway's front door: every call forwarded as HTTP/2 frames, `ModelInfer` balanced per request.

Clients connect here. A `ModelInfer` call is held until its request message is complete (unary calls
are one message), parsed for its model, given a pod by the picker, and sent on that pod's shared
HTTP/2 connection; the answer comes back frame by frame, headers and trailers re-encoded, bytes
untouched. No gRPC library runs on this path: that is what makes it cheap.

Everything else — `ModelStreamInfer` (per-message balancing), requests in a sequence (their pod holds
the state), compressed messages, metadata, admin — is relayed unchanged to the gateway's gRPC service
(`gateway.service`) on a private loopback port, which does the rest.

A call is retried on another pod, within the retry budget, while no answer has started: its pod's
connection failed or went away before taking it, or the pod said it does not have the model. The
client's deadline (grpc-timeout) and cancellation (RST_STREAM) reach the pod. A pod that goes silent
while calls wait on it is pinged; when the PING goes unanswered its connection is dropped, and the
calls on it are retried elsewhere like those of any lost connection.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote, unquote

import grpc

from gateway import wire
from gateway.transport import connection as http2
from gateway.backends import Backend, BackendPool, NoBackendError
from gateway.forwarding import RetryBudget, says_model_missing
from gateway.metrics import GatewayMetrics

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
_CODES = {code.value[0]: code for code in grpc.StatusCode}
DEADLINE_MARGIN_S = 0.010
# Keepalive pings to a pod between two of its answers; see UpstreamConnection.keepalive.
MAX_PINGS_WITHOUT_DATA = 2
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float | None:
    """A grpc-timeout header ("100m", "5S") in seconds; None when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    if unit is None or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * unit


def format_timeout(seconds: float) -> str:
    return f"{max(int(seconds * 1e6), 1)}u"


def error_headers(code: grpc.StatusCode, message: str, trailers_only: bool = True) -> list[tuple[str, str]]:
    """A gRPC status as trailers; with the response headers in front for a trailers-only answer."""
    status = [("grpc-status", str(code.value[0])), ("grpc-message", quote(message, safe=" "))]
    return [(":status", "200"), ("content-type", "application/grpc"), *status] if trailers_only else status


class Call:
    """One client stream: a ModelInfer being balanced, or any call relayed to the gateway's service."""

    __slots__ = ("client", "stream_id", "headers", "body", "relay", "model", "started", "sent", "backend",
                 "upstream", "upstream_id", "tried", "answered", "finished", "reply_bytes", "timeout", "ahead", "size")

    def __init__(self, client: "ClientConnection", stream_id: int, headers, relay: bool):
        self.client = client
        self.stream_id = stream_id
        self.headers = headers
        self.body: list = []  # the request's DATA payloads (views of what was read), sent on as they are
        self.size = 0
        self.relay = relay
        self.model = ""
        self.started = time.perf_counter()
        self.sent = 0.0
        self.backend: Backend | None = None
        self.upstream: UpstreamConnection | None = None
        self.upstream_id = 0
        self.tried: frozenset[Backend] = frozenset()
        self.answered = False  # response headers went to the client: no retry from here on
        self.finished = False
        self.reply_bytes = 0
        self.timeout: float | None = None
        self.ahead = 0  # requests already outstanding on its pod when it was sent


class UpstreamConnection(http2.Connection):
    """The gateway as the client of one pod (or of its own service): calls multiplexed as streams."""

    def __init__(self, door: "FrontDoor"):
        super().__init__(client=True)
        self.door = door
        self.calls: dict[int, Call] = {}
        self.next_id = 1
        self.connected = False
        self.going_away = False
        self._queued: list[tuple[Call, list, list | None, bool]] = []
        # Keepalive: whether the pod sent HEADERS or DATA since the last look, how many PINGs went
        # out since it last did, and the timer that drops the connection if the latest goes unanswered.
        self.heard = False
        self.silent_pings = 0
        self._ping_timer: asyncio.TimerHandle | None = None
        self._lost_reason = ""

    @property
    def busy(self) -> bool:
        """Calls are on it, or queued for it while it connects."""
        return bool(self.calls or self._queued)

    @property
    def usable(self) -> bool:
        return not (self.closed or self.going_away) and self.next_id < http2.MAX_STREAM_ID - 2

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.connected = True
        queued, self._queued = self._queued, []
        for call, headers, body, end in queued:
            self.start(call, headers, body, end)

    def start(self, call: Call, headers, body: list | None, end: bool) -> None:
        """Open a stream for `call` with `headers`, then the `body` pieces (None: DATA follows as it comes)."""
        call.upstream, call.upstream_id = self, 0
        if not self.connected:
            self._queued.append((call, headers, body, end))
            return
        stream_id, self.next_id = self.next_id, self.next_id + 2
        self.calls[stream_id] = call
        call.upstream_id = stream_id
        self.open_stream(stream_id)
        self.send_headers(stream_id, headers, end and body is None)
        if body is not None:
            for piece in body[:-1]:
                self.send_data(stream_id, piece, False)
            self.send_data(stream_id, body[-1] if body else b"", end)

    def relay_data(self, call: Call, data: bytes, end: bool) -> None:
        if call.upstream_id:
            self.send_data(call.upstream_id, data, end)
        else:  # still waiting for the connection
            for index, (queued, headers, body, _) in enumerate(self._queued):
                if queued is call:
                    self._queued[index] = (call, headers, [*(body or ()), data], end)

    def cancel(self, call: Call) -> None:
        self._queued = [q for q in self._queued if q[0] is not call]
        if call.upstream_id and self.calls.get(call.upstream_id) is call:
            del self.calls[call.upstream_id]
            self.reset(call.upstream_id, http2.CANCEL)
        self._close_when_idle()

    def retire(self) -> None:
        """The pod left the fleet: take no new calls, and close once the calls on the way are answered."""
        self.going_away = True
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.going_away and not self.busy and not self.closed:
            self.close()

    # ---- keepalive ------------------------------------------------------------------------------

    def keepalive(self, timeout_s: float) -> None:
        """Called every keepalive interval: ping a pod that sent nothing while calls waited on it.

        At most MAX_PINGS_WITHOUT_DATA pings go out between two answers from the pod: a gRPC server
        (Triton's included) counts closer pings as strikes and, by default, drops a connection after
        more than two, even while its calls are merely slow.
        """
        heard, self.heard = self.heard, False
        if heard or not self.calls:
            self.silent_pings = 0
            return
        if self._ping_timer is not None or self.silent_pings >= MAX_PINGS_WITHOUT_DATA or self.closed:
            return
        self.silent_pings += 1
        self.ping(self.silent_pings.to_bytes(8, "big"))
        self._ping_timer = asyncio.get_running_loop().call_later(timeout_s, self._ping_unanswered, timeout_s)

    def on_ping_ack(self, payload: bytes) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _ping_unanswered(self, timeout_s: float) -> None:
        self._ping_timer = None
        if self.transport is not None and not self.closed:
            self._lost_reason = f"the pod did not answer a PING within {timeout_s:g} s"
            self.transport.abort()  # connection_lost follows: the calls on it go to another pod

    # ---- answers from upstream -----------------------------------------------------------------

    def on_headers(self, stream_id: int, headers, end_stream: bool) -> None:
        self.heard = True
        call = self.calls.get(stream_id)
        if call is None:
            return
        if end_stream:
            del self.calls[stream_id]
        self.door.answer_headers(call, headers, end_stream)
        if end_stream:
            self._close_when_idle()

    def on_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self.heard = True
        call = self.calls.get(stream_id)
        if call is None:
            return
        if end_stream:
            del self.calls[stream_id]
        call.reply_bytes += len(data)
        call.client.send_data(call.stream_id, data, end_stream)
        if end_stream:
            self.door.finish(call, grpc.StatusCode.OK)
            self._close_when_idle()

    def on_reset(self, stream_id: int, code: int) -> None:
        call = self.calls.pop(stream_id, None)
        if call is not None:
            self.door.upstream_failed(call, f"the pod reset the stream (HTTP/2 error {code})",
                                      retryable=code == http2.REFUSED_STREAM)
        self._close_when_idle()

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.going_away = True
        # Streams above last_stream_id were never processed: safe to send elsewhere.
        for stream_id in [s for s in self.calls if s > last_stream_id]:
            self.door.upstream_failed(self.calls.pop(stream_id), "the pod is going away", retryable=True)
        self._close_when_idle()

    def on_lost(self, exc) -> None:
        self.going_away = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        if self._lost_reason:
            reason = self._lost_reason
        else:
            reason = f"connection to the pod lost: {exc}" if exc else "connection to the pod closed"
        calls = [q[0] for q in self._queued] + list(self.calls.values())
        self._queued, self.calls = [], {}
        for call in calls:
            self.door.upstream_failed(call, reason, retryable=True)


class ClientConnection(http2.Connection):
    """One client's connection to the gateway: its streams become `Call`s."""

    def __init__(self, door: "FrontDoor"):
        super().__init__(client=False)
        self.door = door
        self.calls: dict[int, Call] = {}
        self.last_stream_id = 0

    def connection_made(self, transport) -> None:
        self.door.clients.add(self)
        super().connection_made(transport)

    def on_headers(self, stream_id: int, headers, end_stream: bool) -> None:
        call = self.calls.get(stream_id)
        if call is not None:  # trailers from the client end its request stream
            if end_stream:
                self.on_data(stream_id, b"", True)
            return
        if self.door.closing:
            self.reset(stream_id, http2.REFUSED_STREAM)
            return
        self.last_stream_id = max(self.last_stream_id, stream_id)
        path = next((value for name, value in headers if name == ":path"), "")
        call = self.calls[stream_id] = Call(self, stream_id, headers, relay=path != INFER_PATH)
        if call.relay:
            self.door.internal().start(call, headers, None, end_stream)
        elif end_stream:
            self.door.route(call)

    def on_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        call = self.calls.get(stream_id)
        if call is None or call.finished:
            return
        if call.relay:
            call.upstream.relay_data(call, data, end_stream)
            return
        call.body.append(data)
        call.size += len(data)
        if call.size > self.door.max_message_bytes + 5:
            self.door.fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"request larger than {self.door.max_message_bytes} bytes")
            self.reset(stream_id, http2.CANCEL)
        elif end_stream:
            self.door.route(call)

    def on_reset(self, stream_id: int, code: int) -> None:
        call = self.calls.pop(stream_id, None)
        if call is not None:
            self.door.cancelled(call)

    def on_lost(self, exc) -> None:
        self.door.clients.discard(self)
        calls, self.calls = list(self.calls.values()), {}
        for call in calls:
            self.door.cancelled(call)

    def done(self, call: Call) -> None:
        self.calls.pop(call.stream_id, None)
        if self.door.closing and not self.calls:
            self.finish_sending()


class FrontDoor:
    """The listening socket, the client connections, and one upstream connection per pod."""

    def __init__(self, pool: BackendPool, metrics: GatewayMetrics, budget: RetryBudget, retry_attempts: int,
                 internal_address: tuple[str, int], max_message_bytes: int, keepalive_time_s: float,
                 keepalive_timeout_s: float):
        self.pool = pool
        self.metrics = metrics
        self.budget = budget
        self.retry_attempts = retry_attempts
        self.internal_address = internal_address
        self.max_message_bytes = max_message_bytes
        self.clients: set[ClientConnection] = set()
        self.closing = False
        self.server: asyncio.AbstractServer | None = None
        self._internal: UpstreamConnection | None = None
        self._upstreams: dict[Backend, UpstreamConnection] = {}
        # Every connection to a pod, the retired ones with calls still on them included: all are pinged.
        self._pod_connections: set[UpstreamConnection] = set()
        self.keepalive_time_s = keepalive_time_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self._keepalive_task: asyncio.Task | None = None
        pool.removal_listeners.append(self._retire_upstream)

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: ClientConnection(self), host, port, reuse_port=True)
        self._keepalive_task = loop.create_task(self._keep_alive())
        return self.server.sockets[0].getsockname()[1]

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_time_s)
            self._pod_connections = {c for c in self._pod_connections
                                     if not c.closed and (c.busy or not c.going_away)}
            for connection in self._pod_connections:
                connection.keepalive(self.keepalive_timeout_s)

    async def drain(self, grace: float) -> None:
        """Stop accepting, tell clients to go (GOAWAY), let calls in flight finish within `grace`."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        for client in list(self.clients):
            client.goaway(client.last_stream_id)
            if not client.calls:
                client.finish_sending()
        deadline = time.monotonic() + grace
        while any(c.calls for c in self.clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for client in list(self.clients):
            client.finish_sending()
        # Closing a socket whose peer is still sending makes the kernel answer with a reset, and a reset
        # discards what the peer has not read yet: the last trailers of a loaded client, which then sees
        # "Socket closed". So each client is sent FIN and closes the connection itself (gRPC clients do
        # once GOAWAY came and their streams ended); the process exits only after that, or the grace.
        while self.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for client in list(self.clients):
            client.close()
        for upstream in [*self._upstreams.values(), self._internal]:
            if upstream is not None:
                upstream.close()

    # ---- connections upstream -------------------------------------------------------------------

    def _connect(self, host: str, port: int) -> UpstreamConnection:
        connection = UpstreamConnection(self)
        loop = asyncio.get_running_loop()

        async def connect():
            # A pod on a node that went away answers no SYN: without a bound, the calls queued for the
            # connection would wait for the kernel to give up (minutes).
            timeout = self.keepalive_timeout_s
            try:
                await asyncio.wait_for(loop.create_connection(lambda: connection, host, port), timeout)
            except TimeoutError:
                connection.on_lost(ConnectionError(f"no connection within {timeout:g} s"))
            except OSError as exc:
                connection.on_lost(exc)

        loop.create_task(connect())
        return connection

    def internal(self) -> UpstreamConnection:
        if self._internal is None or not self._internal.usable:
            self._internal = self._connect(*self.internal_address)
        return self._internal

    def _retire_upstream(self, backend: Backend) -> None:
        connection = self._upstreams.pop(backend, None)
        if connection is not None:
            connection.retire()

    def upstream_for(self, backend: Backend) -> UpstreamConnection:
        connection = self._upstreams.get(backend)
        if connection is None or not connection.usable:
            host, _, port = backend.address.rpartition(":")
            connection = self._upstreams[backend] = self._connect(host.strip("[]"), int(port))
            self._pod_connections.add(connection)
        return connection

    # ---- ModelInfer: route, answer, retry ----------------------------------------------------------

    def route(self, call: Call) -> None:
        if call.size < 5:  # not even a gRPC message prefix (grpcio's server would never answer it)
            self.fail(call, grpc.StatusCode.INVALID_ARGUMENT,
                      f"a ModelInfer call carries one gRPC message; this one has {call.size} bytes")
            return
        if len(call.body[0]) < 5:  # the prefix itself came in pieces
            call.body = [b"".join(call.body)]
        first = call.body[0]
        length = int.from_bytes(first[1:5], "big")
        if first[0] != 0 or length != call.size - 5:
            # Compressed or not one message: the gRPC service decodes (or refuses) it.
            self._relay_whole(call)
            return
        try:
            try:  # after the gRPC message prefix; the first piece holds all routing needs, mostly
                route = wire.parse_infer_request(first, 5, call.size)
            except wire.MessageIncomplete:
                call.body = [b"".join(call.body)]
                route = wire.parse_infer_request(call.body[0], 5)
        except wire.MalformedMessage as exc:
            self.fail(call, grpc.StatusCode.INVALID_ARGUMENT, f"malformed ModelInferRequest: {exc}")
            return
        if route.in_sequence:  # the service pins the sequence to its pod
            self._relay_whole(call)
            return
        call.model = route.model
        call.timeout = next((parse_timeout(v) for k, v in call.headers if k == "grpc-timeout"), None)
        self.budget.deposit()
        self.metrics.bytes_in.inc(call.size)
        self._dispatch(call)

    def _relay_whole(self, call: Call) -> None:
        call.relay = True
        self.internal().start(call, call.headers, call.body, True)

    def _dispatch(self, call: Call) -> None:
        backend = self.pool.try_acquire(call.model, call.tried)
        if backend is None:
            asyncio.get_running_loop().create_task(self._dispatch_when_room(call))
            return
        self._send(call, backend)

    async def _dispatch_when_room(self, call: Call) -> None:
        try:
            backend = await self.pool.acquire(call.model, call.tried)
        except NoBackendError as exc:
            self.fail(call, exc.code, str(exc))
        else:
            if call.finished:  # the client gave up while the call waited
                self.pool.release(backend, None)
            else:
                self._send(call, backend)

    def _send(self, call: Call, backend: Backend) -> None:
        call.backend = backend
        call.ahead = backend.inflight - 1
        call.sent = time.perf_counter()
        headers = call.headers
        if call.tried and call.timeout is not None:  # a retry: what is left of the client's deadline
            left = call.timeout - (call.sent - call.started)
            if left <= 0:
                self.pool.release(backend, None)
                self.fail(call, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before a retry")
                return
            headers = [(k, format_timeout(left) if k == "grpc-timeout" else v) for k, v in headers]
        self.upstream_for(backend).start(call, headers, call.body, True)

    def answer_headers(self, call: Call, headers, end_stream: bool) -> None:
        if call.finished:
            return
        status = _status(headers) if end_stream else grpc.StatusCode.OK
        if not call.relay and end_stream and not call.answered:
            message = unquote(next((v for k, v in headers if k == "grpc-message"), ""))
            if says_model_missing(status, message):
                self.upstream_failed(call, message, retryable=True, model_missing=True, headers=headers)
                return
        call.answered = True
        call.client.send_headers(call.stream_id, headers, end_stream)
        if end_stream:
            self.finish(call, status)

    def finish(self, call: Call, code: grpc.StatusCode) -> None:
        """The call's answer is complete (trailers sent, or the last DATA of a relayed stream)."""
        if call.finished:
            return
        call.finished = True
        call.client.done(call)
        if call.relay:
            return
        now = time.perf_counter()
        latency = now - call.sent if code is grpc.StatusCode.OK else None
        self.pool.release(call.backend, latency, call.ahead, call.model)
        self.metrics.bytes_out.inc(call.reply_bytes)
        self.metrics.observe(call.model, call.backend.address, "ModelInfer", code.name, now - call.started,
                             now - call.sent)

    def upstream_failed(self, call: Call, reason: str, retryable: bool, model_missing: bool = False,
                        headers=None) -> None:
        if call.finished:
            return
        if call.relay:
            self._end_relay(call, reason)
            return
        backend = call.backend
        self.pool.release(backend, None)
        if model_missing:
            self.pool.drop_model(backend, call.model)
        else:
            self.pool.eject(backend, reason)
        call.tried = call.tried | {backend}
        if (retryable and not call.answered and len(call.tried) <= self.retry_attempts
                and self.budget.withdraw()):
            self.metrics.retries.labels(call.model).inc()
            self._dispatch(call)
            return
        if headers is not None:  # the pod's own answer, when there is one
            call.answered = True
            call.client.send_headers(call.stream_id, headers, True)
            self._finish_failed(call, backend.address, _status(headers))
        else:
            self._end_with_status(call, grpc.StatusCode.UNAVAILABLE, reason)
            self._finish_failed(call, backend.address, grpc.StatusCode.UNAVAILABLE)

    def _end_relay(self, call: Call, reason: str) -> None:
        call.finished = True
        self._end_with_status(call, grpc.StatusCode.UNAVAILABLE, reason)
        call.client.done(call)

    @staticmethod
    def _end_with_status(call: Call, code: grpc.StatusCode, message: str) -> None:
        """End the client's stream with `code`: as trailers after an answer began, else trailers-only."""
        call.client.send_headers(call.stream_id, error_headers(code, message, not call.answered), True)

    def _finish_failed(self, call: Call, address: str, code: grpc.StatusCode) -> None:
        call.finished = True
        call.client.done(call)
        self.metrics.observe(call.model or "unknown", address, "ModelInfer", code.name,
                             time.perf_counter() - call.started, 0.0)

    def fail(self, call: Call, code: grpc.StatusCode, message: str) -> None:
        """Answer a call the gateway itself refuses (bad request, no pod) with a trailers-only error."""
        if call.finished:
            return
        self._end_with_status(call, code, message)
        self._finish_failed(call, "none", code)

    def cancelled(self, call: Call) -> None:
        """The client reset the stream or went away: cancel upstream, count it."""
        if call.upstream is not None:
            call.upstream.cancel(call)
        if call.finished:
            return
        call.finished = True
        if not call.relay and call.backend is not None:
            self.pool.release(call.backend, None)
            now = time.perf_counter()
            # A client resets its stream when its deadline passes; the gateway saw the call start a
            # little after the client did, hence the margin.
            late = call.timeout is not None and now - call.started + DEADLINE_MARGIN_S >= call.timeout
            self.metrics.observe(call.model, call.backend.address, "ModelInfer",
                                 "DEADLINE_EXCEEDED" if late else "CANCELLED", now - call.started, now - call.sent)


def _status(headers) -> grpc.StatusCode:
    for name, value in headers:
        if name == "grpc-status":
            return _CODES.get(int(value), grpc.StatusCode.UNKNOWN) if value.isdigit() else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.UNKNOWN
