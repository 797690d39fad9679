"""`ModelStreamInfer` at the frame level: one client stream, its messages routed one by one.

The edge hands each complete request message of a client stream to its `StreamCall`, which routes it:
- a stateless model's request is balanced like a unary call: it goes to the least busy pod as its own
  `ModelInfer` (retried like one), and its answer comes back on the client's stream, wrapped as a
  `ModelStreamInferResponse`, when it is ready (completion order) — so a long-lived camera stream
  spreads over the fleet instead of pinning one pod;
- a request in a sequence (non-zero `sequence_id`) goes to the pod its `sequence_start` went to
  (`routing.sequences`), over one upstream `ModelStreamInfer` stream per pod per client stream, which
  keeps the sequence's order; a pod lost mid-stream ends its sequences with a clear UNAVAILABLE error
  message, and later messages of those sequences get FAILED_PRECONDITION until the client starts them
  again;
- a decoupled model's request (0..n responses) is balanced per message too, over those upstream
  streams, since only a stream can carry several responses; its answers are relayed as they come.
Per-message errors are sent as `error_message` on the stream, as Triton does, and the stream goes on.

At most MAX_OUTSTANDING messages of one stream are in flight; beyond that the stream's received bytes
are not granted back to the client (HTTP/2 flow control), so a client that sends faster than the fleet
answers is slowed down instead of buffered. The client half-closing ends the stream (status OK) once
every outstanding message is answered; its reset cancels them on their pods; the gateway's drain stops
taking messages, lets those in flight finish and ends the stream with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import grpc

from gateway import wire
from gateway.backends import Backend, NoBackendError
from gateway.fleet.upstreams import UpstreamStream
from gateway.routing.lifecycle import Lifecycle, Router, says_model_missing
from gateway.routing.sequences import SequenceError, stream_sequences
from gateway.transport.messages import (PREFIX_SIZE, BadMessage, Message, MessageReader, MessageTooLarge,
                                        decompress, format_timeout, header, message_of, ok_headers,
                                        status_of)

log = logging.getLogger("tritonfleet.gateway")

METHOD = "ModelStreamInfer"
SERVICE = "/inference.GRPCInferenceService/"
PATH = SERVICE + METHOD
# Messages of one stream in flight at once; a client that sends more waits for flow-control window.
MAX_OUTSTANDING = 256
SHUTTING_DOWN = "the gateway is shutting down; reconnect to continue the stream"
# Not passed on to the pods: each attempt sets its own deadline, and a pod's answers must come
# uncompressed (a stateless message's answer is rewrapped here).
_NOT_FORWARDED = frozenset({"grpc-timeout", "grpc-accept-encoding"})


def describe(route: wire.RequestRoute, code: grpc.StatusCode, details: str) -> str:
    """A per-message error, naming the request and its model (a client has many in flight)."""
    who = f"request '{route.request_id}'" if route.request_id else "request"
    return f"{code.name}: {who} for model '{route.model}': {details}"


class StreamCall:
    """One client `ModelStreamInfer` stream (an edge `CallHandler`)."""

    def __init__(self, router: Router, stream):
        self.router = router
        self.stream = stream  # the edge's ClientStream: how to answer
        self.metrics = router.metrics
        self.upstreams = router.upstreams
        self.catalog = router.catalog
        self.max_message_bytes = stream.client.door.max_message_bytes
        self.started = time.perf_counter()
        self.encoding = stream.header("grpc-encoding", "identity")
        # The client's headers (its metadata reaches the pod with each message), less the hop's own.
        self.forwarded = [(k, v) for k, v in stream.headers if k not in _NOT_FORWARDED]
        self.waiting: deque[Message] = deque()  # received, not dispatched yet (no room, or a pick waits)
        self.outstanding = 0  # messages sent on and not answered yet
        self.unary: set[_UnaryMessage] = set()
        self.pods: dict[Backend, _PodStream] = {}
        self.sequences = stream_sequences()
        self.picking: asyncio.Task | None = None  # a sequence's or decoupled message's wait for a pod
        self.client_done = False
        self.draining = False
        self.over = False
        self.metrics.active_streams.inc()

    # ---- the client's side (CallHandler) ------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        if self.draining or self.over:
            self.stream.release(message.size + PREFIX_SIZE)
            return
        self.waiting.append(message)
        self._pump()

    def on_end(self) -> None:
        self.client_done = True
        self._finish_if_done()

    def on_cancel(self) -> None:
        """The client reset its stream or went away: every message still out is cancelled on its pod."""
        if self.over:
            return
        self._close()
        if self.picking is not None:
            self.picking.cancel()
        for message in list(self.unary):
            message.cancel()
        for pod in list(self.pods.values()):
            pod.cancel()

    def drain(self) -> None:
        """Take no more messages; those in flight finish, then the stream ends with UNAVAILABLE."""
        self.draining = True
        for message in self.waiting:
            self.stream.release(message.size + PREFIX_SIZE)
        self.waiting.clear()
        self._finish_if_done()

    # ---- dispatching ------------------------------------------------------------------------------

    def _pump(self) -> None:
        while self.waiting and self.picking is None and self.outstanding < MAX_OUTSTANDING and not self.over:
            self._dispatch(self.waiting.popleft())
        self.stream.hold_window(bool(self.waiting))

    def _dispatch(self, message: Message) -> None:
        try:
            route = self._route(message)
        except (wire.MalformedMessage, BadMessage) as exc:
            self.stream.release(message.size + PREFIX_SIZE)
            self.metrics.count("", "none", METHOD, "INVALID_ARGUMENT")
            self.answer_error(f"INVALID_ARGUMENT: malformed ModelInferRequest: {exc}")
            return
        except MessageTooLarge as exc:
            self.stream.release(message.size + PREFIX_SIZE)
            self.metrics.count("", "none", METHOD, "RESOURCE_EXHAUSTED")
            self.answer_error(f"RESOURCE_EXHAUSTED: {exc}")
            return
        if route.in_sequence or self.catalog.get(route.model).decoupled:
            self._to_pod_stream(route, message)
        else:
            _UnaryMessage(self, route, message).start()

    def _route(self, message: Message) -> wire.RequestRoute:
        if message.compressed:
            return wire.parse_infer_request(decompress(message, self.encoding, self.max_message_bytes))
        try:  # the first piece holds all routing needs, mostly: no join of a large message
            return wire.parse_infer_request(message.first(), 0, message.size)
        except wire.MessageIncomplete:
            return wire.parse_infer_request(message.joined())

    def _to_pod_stream(self, route: wire.RequestRoute, message: Message) -> None:
        try:
            pinned = self.sequences.pinned(route) if route.in_sequence else None
        except SequenceError as exc:
            self.stream.release(message.size + PREFIX_SIZE)
            self.metrics.count(route.model, "none", METHOD, exc.code.name)
            self.answer_error(describe(route, exc.code, str(exc)))
            return
        lifecycle = Lifecycle(self.router, route.model, METHOD, self.time_left(), pinned=pinned,
                              retryable=False, request_bytes=message.size)
        backend = lifecycle.try_pick()
        if backend is not None:
            self._send_on_pod_stream(route, message, lifecycle, backend)
            return
        # Later messages wait behind this one, so that a sequence's order holds.
        self.picking = asyncio.get_running_loop().create_task(self._pick_then_send(route, message, lifecycle))

    async def _pick_then_send(self, route, message: Message, lifecycle: Lifecycle) -> None:
        try:
            backend = await lifecycle.pick()
        except NoBackendError as exc:
            self.stream.release(message.size + PREFIX_SIZE)
            self.answer_error(describe(route, exc.code, str(exc)))
            lifecycle.ended(exc.code)
        except asyncio.CancelledError:
            lifecycle.cancelled()
            raise
        else:
            self._send_on_pod_stream(route, message, lifecycle, backend)
        finally:
            self.picking = None
        self._pump()
        self._finish_if_done()

    def _send_on_pod_stream(self, route, message: Message, lifecycle: Lifecycle, backend: Backend) -> None:
        if route.in_sequence:
            self.sequences.bind(route, backend)
        pod = self.pods.get(backend)
        if pod is None:
            pod = self.pods[backend] = _PodStream(self, backend)
        pod.send(route, message, lifecycle)

    # ---- answering --------------------------------------------------------------------------------

    def answer(self, payload: bytes) -> None:
        """One `ModelStreamInferResponse` to the client."""
        if not self.over:
            self.stream.send_message(payload)

    def answer_framed(self, message: Message) -> None:
        """A pod's own `ModelStreamInferResponse`, relayed as its pieces came."""
        if self.over:
            return
        if not self.stream.answered:
            self.stream.send_headers(ok_headers())
        for piece in message.framed():
            self.stream.send_data(piece)

    def answer_error(self, text: str) -> None:
        self.answer(wire.stream_error(text))

    def time_left(self) -> float | None:
        if self.stream.deadline_s is None:
            return None
        return self.stream.deadline_s - (time.perf_counter() - self.started)

    def upstream_headers(self, method: str, timeout: str | None) -> list[tuple[str, str]]:
        path = SERVICE + method
        headers = [(k, path if k == ":path" else v) for k, v in self.forwarded]
        if timeout is not None:
            headers.append(("grpc-timeout", timeout))
        return headers

    # ---- ending -------------------------------------------------------------------------------------

    def freed(self) -> None:
        """A message sent on got its answer (or its failure): room for the next ones."""
        self._pump()
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if self.over or not (self.client_done or self.draining) or self.waiting or self.picking or self.unary:
            return
        for pod in list(self.pods.values()):
            pod.close()  # no more messages: the pod ends its stream once it has answered them all
        if self.pods:
            return
        self._close()
        if self.draining:
            self.stream.end(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        else:
            self.stream.end(grpc.StatusCode.OK)

    def pod_ended(self, pod: "_PodStream") -> None:
        if self.pods.get(pod.backend) is pod:
            del self.pods[pod.backend]
        self._finish_if_done()

    def _close(self) -> None:
        self.over = True
        self.metrics.active_streams.dec()


class _UnaryMessage:
    """One stateless message sent as its own `ModelInfer` (an `UpstreamListener`), retried like a unary
    call while no answer has reached the client."""

    __slots__ = ("call", "route", "message", "lifecycle", "upstream", "reader", "replies", "task", "done")

    def __init__(self, call: StreamCall, route: wire.RequestRoute, message: Message):
        self.call = call
        self.route = route
        self.message = message
        self.lifecycle = Lifecycle(call.router, route.model, METHOD, call.time_left(), request_bytes=message.size)
        self.upstream: UpstreamStream | None = None
        self.reader: MessageReader | None = None
        self.replies: list[Message] = []
        self.task: asyncio.Task | None = None
        self.done = False
        call.outstanding += 1
        call.unary.add(self)

    def start(self) -> None:
        backend = self.lifecycle.try_pick()
        if backend is None:
            self.task = asyncio.get_running_loop().create_task(self._pick_then_send())
        else:
            self._send(backend)

    async def _pick_then_send(self) -> None:
        try:
            backend = await self.lifecycle.pick()
        except NoBackendError as exc:
            self._end(exc.code, str(exc))
            return
        self.task = None
        if self.done:  # the client went away while the message waited
            self.lifecycle.put_back(backend)
        else:
            self._send(backend)

    def _send(self, backend: Backend) -> None:
        try:
            timeout = self.lifecycle.timeout_header()
        except NoBackendError as exc:  # DeadlineExceeded: nothing worth an attempt is left
            self.lifecycle.put_back(backend)
            self._end(exc.code, str(exc))
            return
        self.lifecycle.sent(backend)
        self.reader = MessageReader(self.call.max_message_bytes)
        self.replies = []
        headers = self.call.upstream_headers("ModelInfer", timeout)
        self.upstream = self.call.upstreams.open(backend.address, self, headers, self.message.framed(), True)

    def _retry_or_end(self, code: grpc.StatusCode, details: str, *, retryable: bool, model_missing: bool = False,
                      unreachable: bool) -> None:
        if self.lifecycle.failed(details, retryable=retryable, model_missing=model_missing, unreachable=unreachable):
            self.start()
        else:
            self._end(code, details)

    # ---- UpstreamListener ---------------------------------------------------------------------------

    def on_upstream_headers(self, headers, end_stream: bool) -> None:
        if not end_stream or self.done:
            return
        code = status_of(headers)
        if code is not grpc.StatusCode.OK:
            details = message_of(headers)
            missing = says_model_missing(code, details)
            self._retry_or_end(code, details, retryable=missing, model_missing=missing, unreachable=False)
            return
        if len(self.replies) != 1:
            self._end(grpc.StatusCode.INTERNAL, f"the pod answered {len(self.replies)} messages to a ModelInfer")
            return
        reply = self.replies[0]
        payload = decompress(reply, header(headers, "grpc-encoding"), self.call.max_message_bytes) \
            if reply.compressed else reply.joined()
        self.call.answer(wire.stream_response(payload))
        self._finish(grpc.StatusCode.OK, reply.size)

    def on_upstream_data(self, data, end_stream: bool) -> None:
        if self.done:
            return
        try:
            self.replies += self.reader.feed(data)
        except (MessageTooLarge, BadMessage) as exc:
            self.upstream.cancel()
            self._end(grpc.StatusCode.INTERNAL, f"the pod's answer is not readable: {exc}")
            return
        if end_stream:  # DATA that ends a gRPC answer without trailers: the pod broke the protocol
            self._retry_or_end(grpc.StatusCode.INTERNAL, "the pod ended its answer without a status",
                               retryable=False, unreachable=False)

    def on_upstream_failed(self, reason: str, retryable: bool) -> None:
        if not self.done:
            self._retry_or_end(grpc.StatusCode.UNAVAILABLE, reason, retryable=retryable, unreachable=True)

    # ---- ending -------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """The client went away: the pod's call is cancelled with it."""
        if self.done:
            return
        if self.task is not None:
            self.task.cancel()
        if self.upstream is not None:
            self.upstream.cancel()
        self.done = True
        self.call.unary.discard(self)
        self.call.stream.release(self.message.size + PREFIX_SIZE)
        self.lifecycle.cancelled()

    def _end(self, code: grpc.StatusCode, details: str) -> None:
        self.call.answer_error(describe(self.route, code, details))
        self._finish(code, 0)

    def _finish(self, code: grpc.StatusCode, reply_bytes: int) -> None:
        self.done = True
        self.call.unary.discard(self)
        self.call.stream.release(self.message.size + PREFIX_SIZE)
        self.lifecycle.ended(code, reply_bytes)
        self.call.outstanding -= 1
        self.call.freed()


class _PodStream:
    """One upstream `ModelStreamInfer` stream from a client stream to one pod (an `UpstreamListener`),
    for sequences and decoupled models; the pod's answers are relayed to the client as they come."""

    def __init__(self, call: StreamCall, backend: Backend):
        self.call = call
        self.backend = backend
        self.reader = MessageReader(call.max_message_bytes)
        # The lifecycles of messages sent and not answered yet (a decoupled model's are not here: 0..n
        # answers show no end, so such a message counts as done once it is on its way).
        self.waiting: deque[Lifecycle] = deque()
        self.closing = False
        self.ended = False
        timeout = call.time_left()
        headers = call.upstream_headers(METHOD, None if timeout is None else format_timeout(max(timeout, 0.0)))
        self.upstream = call.upstreams.open(backend.address, self, headers, None, False)

    def send(self, route: wire.RequestRoute, message: Message, lifecycle: Lifecycle) -> None:
        lifecycle.sent(self.backend)
        for piece in message.framed():
            self.upstream.send_data(piece, False)
        self.call.stream.release(message.size + PREFIX_SIZE)
        if self.call.catalog.get(route.model).decoupled:
            lifecycle.succeeded()
        else:
            self.waiting.append(lifecycle)
            self.call.outstanding += 1

    def close(self) -> None:
        if not self.closing and not self.ended:
            self.closing = True
            self.upstream.send_data(b"", True)

    def cancel(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.upstream.cancel()
        while self.waiting:
            self.waiting.popleft().cancelled()

    # ---- UpstreamListener ---------------------------------------------------------------------------

    def on_upstream_headers(self, headers, end_stream: bool) -> None:
        if not end_stream or self.ended:
            return
        code = status_of(headers)
        if code is grpc.StatusCode.OK and self.closing and not self.waiting:
            self.ended = True
            self.call.pod_ended(self)
        else:  # the pod ended the stream itself: what was on it is lost
            self._lost(code, message_of(headers) or "the pod ended the stream", unreachable=False)

    def on_upstream_data(self, data, end_stream: bool) -> None:
        if self.ended:
            return
        try:
            answers = self.reader.feed(data)
        except (MessageTooLarge, BadMessage) as exc:
            self.upstream.cancel()
            self._lost(grpc.StatusCode.INTERNAL, f"the pod's answer is not readable: {exc}", unreachable=False)
            return
        for answer in answers:
            self._relay(answer)
        if end_stream:
            self._lost(grpc.StatusCode.INTERNAL, "the pod ended its stream without a status", unreachable=False)

    def on_upstream_failed(self, reason: str, retryable: bool) -> None:
        if not self.ended:
            self._lost(grpc.StatusCode.UNAVAILABLE, reason, unreachable=True)

    def _relay(self, answer: Message) -> None:
        if answer.compressed:  # not asked for (no grpc-accept-encoding went to the pod)
            self.call.answer_error(f"INTERNAL: pod {self.backend.address} sent a compressed answer")
        else:
            model = _answer_model(answer)
            if self.waiting and not self.call.catalog.get(model).decoupled:
                # Answers of one upstream stream are counted in order; an error_message (no model) too.
                self.waiting.popleft().ended(grpc.StatusCode.OK if model else grpc.StatusCode.UNKNOWN, answer.size)
                self.call.outstanding -= 1
            else:  # a decoupled model's answer: its message was counted when it went to the pod
                self.call.metrics.bytes_out.inc(answer.size)
            self.call.answer_framed(answer)
        self.call.freed()

    def _lost(self, code: grpc.StatusCode, details: str, unreachable: bool) -> None:
        """The pod's stream ended before the client's: its sequences end with a clear error."""
        self.ended = True
        address = self.backend.address
        reason = f"its pod {address} was lost ({code.name}: {details}); start it again"
        log.warning("upstream stream lost", extra={"backend": address, "code": code.name, "details": details})
        call = self.call
        for model, sequence_id in call.sequences.lose(self.backend, reason):
            call.metrics.count(model, address, METHOD, code.name)
            call.answer_error(f"UNAVAILABLE: sequence {sequence_id} of model '{model}' ended: {reason}")
        if self.waiting:
            call.answer_error(f"UNAVAILABLE: {len(self.waiting)} request(s) in flight on pod {address} were lost")
        if not self.waiting and unreachable:
            call.router.pool.eject(self.backend, details)
        while self.waiting:
            lifecycle = self.waiting.popleft()
            lifecycle.failed(details, retryable=False, unreachable=unreachable)
            lifecycle.ended(grpc.StatusCode.UNAVAILABLE)
            call.outstanding -= 1
        call.pod_ended(self)
        call.freed()


def _answer_model(answer: Message) -> str:
    """The model a pod's `ModelStreamInferResponse` names ("" for an error message)."""
    try:
        return wire.stream_response_model(answer.joined())
    except wire.MalformedMessage:
        return ""
