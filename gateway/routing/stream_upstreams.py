"""How one message of a client `ModelStreamInfer` stream reaches its pod and its answers come back:
- `StatelessMessage`: a stateless model's request as its own `ModelInfer` to the pod its lifecycle
  picks (retried like a unary call while no answer has reached the client); the answer is wrapped as a
  `ModelStreamInferResponse` for the client's stream;
- `PodStream`: one upstream `ModelStreamInfer` stream from a client stream to one pod, for the
  messages of sequences (which keeps their order) and of decoupled models (0..n answers each); the
  pod's answers are relayed as they came. When it is lost, the sequences on it end with a clear
  UNAVAILABLE error message, and later messages of theirs are refused (`routing.sequences`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import grpc

from gateway import wire
from gateway.fleet.backends import Backend, NoBackendError
from gateway.fleet.upstreams import UpstreamStream
from gateway.routing.lifecycle import Lifecycle, says_model_missing, says_version_missing
from gateway.transport.messages import (PREFIX_SIZE, BadMessage, Message, MessageReader, MessageTooLarge,
                                        decompress, format_timeout, header, message_of, status_of)

if TYPE_CHECKING:
    from gateway.routing.streams import StreamCall

log = logging.getLogger("tritonfleet.gateway")

METHOD = "ModelStreamInfer"


def describe(route: wire.RequestRoute, code: grpc.StatusCode, details: str) -> str:
    """A per-message error, naming the request and its model (a client has many in flight)."""
    who = f"request '{route.request_id}'" if route.request_id else "request"
    return f"{code.name}: {who} for model '{route.model}': {details}"


class StatelessMessage:
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
        call.stateless.add(self)

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
            missing = says_model_missing(code, details) and not says_version_missing(details)
            self._retry_or_end(code, details, retryable=missing, model_missing=missing, unreachable=False)
            return
        if len(self.replies) != 1:
            self._end(grpc.StatusCode.INTERNAL, f"the pod answered {len(self.replies)} messages to a ModelInfer")
            return
        reply = self.replies[0]
        if reply.compressed:
            self.call.answer(wire.stream_response(decompress(reply, header(headers, "grpc-encoding"),
                                                             self.call.max_message_bytes)))
        else:
            head = wire.stream_response_head(reply.size)
            self.call.answer_pieces(head, reply.pieces, len(head) + reply.size)
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
        self.call.stateless.discard(self)
        self.call.stream.release(self.message.size + PREFIX_SIZE)
        self.lifecycle.cancelled()

    def _end(self, code: grpc.StatusCode, details: str) -> None:
        self.call.answer_error(describe(self.route, code, details))
        self._finish(code, 0)

    def _finish(self, code: grpc.StatusCode, reply_bytes: int) -> None:
        self.done = True
        self.call.stateless.discard(self)
        self.call.stream.release(self.message.size + PREFIX_SIZE)
        self.lifecycle.ended(code, reply_bytes)
        self.call.outstanding -= 1
        self.call.freed()


class PodStream:
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
            self.call.answer_pieces(b"", answer.pieces, answer.size)
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
