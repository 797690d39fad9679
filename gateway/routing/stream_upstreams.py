"""How the messages of a client `ModelStreamInfer` stream reach their pods and their answers come back.

Every message goes on a `PodStream`: one upstream `ModelStreamInfer` stream from the client stream to
one pod, opened at the first message for that pod and kept while the client stream lasts, and one per model
on it, so that a message costs one DATA frame each way, as on the client's stream (a `ModelInfer` of its
own per message cost HEADERS out, HEADERS, DATA and trailers back). The pod answers a non-decoupled
model's requests in the order it got them (Triton keeps that order on a stream), so each answer is
matched to the oldest message waiting on its pod stream; one stream per model keeps a slow model's
answers from holding back a fast one's.

- `StatelessMessage`: a stateless model's request, balanced on its own (its lifecycle picks the pod)
  and held until its answer reaches the client, so that it can be retried on another pod when its pod
  stream is lost or the pod says it does not have the model;
- `PinnedMessage`: a request in a sequence, which goes to its sequence's pod and is never retried
  (the sequence's state lives there); when its pod stream is lost, its sequence ends with a clear
  UNAVAILABLE error message and later messages of it are refused (`routing.sequences`);
- a decoupled model's request (0..n answers, no sign of the last) counts as done once it is on its
  way; its answers are relayed as they come.
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
from gateway.routing.lifecycle import Lifecycle, error_says_model_missing, says_model_missing
from gateway.transport.messages import (PREFIX_SIZE, BadMessage, Message, MessageReader, MessageTooLarge,
                                        format_timeout, message_of, status_of)

if TYPE_CHECKING:
    from gateway.routing.streams import StreamCall

log = logging.getLogger("tritonfleet.gateway")

METHOD = "ModelStreamInfer"


def describe(route: wire.RequestRoute, code: grpc.StatusCode, details: str) -> str:
    """A per-message error, naming the request and its model (a client has many in flight)."""
    who = f"request '{route.request_id}'" if route.request_id else "request"
    return f"{code.name}: {who} for model '{route.model}': {details}"


class StatelessMessage:
    """One stateless model's message: picked for on its own, sent on the pod stream of its pod, and
    retried on another pod while its answer has not reached the client."""

    __slots__ = ("call", "route", "message", "lifecycle", "pod", "task", "done")

    def __init__(self, call: StreamCall, route: wire.RequestRoute, message: Message):
        self.call = call
        self.route = route
        self.message = message
        self.lifecycle = Lifecycle(call.router, route.model, METHOD, call.time_left(), request_bytes=message.size)
        self.pod: PodStream | None = None
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
        if self.lifecycle.deadline_s is not None:
            try:
                self.lifecycle.timeout_header()
            except NoBackendError as exc:  # DeadlineExceeded: nothing worth an attempt is left
                self.lifecycle.put_back(backend)
                self._end(exc.code, str(exc))
                return
        self.lifecycle.sent(backend)
        self.pod = self.call.pod_stream(backend, self.route.model)
        self.pod.carry(self, self.message)

    def _retry_or_end(self, code: grpc.StatusCode, details: str, *, retryable: bool, model_missing: bool = False,
                      unreachable: bool) -> None:
        self.pod = None
        if self.lifecycle.failed(details, retryable=retryable, model_missing=model_missing, unreachable=unreachable):
            self.start()
        else:
            self._end(code, details)

    # ---- what its pod stream tells it -----------------------------------------------------------------

    def answered(self, answer: Message, error: bool) -> None:
        """The pod's answer to this message (`error`: an error message)."""
        if self.done:
            return
        if error:
            text = wire.stream_error_text(answer.joined())
            if error_says_model_missing(text):
                self._retry_or_end(grpc.StatusCode.UNAVAILABLE, text, retryable=True, model_missing=True,
                                   unreachable=False)
                return
        self.call.answer_pieces(answer.pieces, answer.size)
        self._finish(grpc.StatusCode.UNKNOWN if error else grpc.StatusCode.OK, answer.size)

    def lost(self, code: grpc.StatusCode, details: str, *, retryable: bool, unreachable: bool) -> None:
        """Its pod stream ended before the answer came."""
        if not self.done:
            self._retry_or_end(code, details, retryable=retryable, unreachable=unreachable)

    # ---- ending -------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """The client went away (its pod streams are cancelled with it)."""
        if self.done:
            return
        if self.task is not None:
            self.task.cancel()
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


class PinnedMessage:
    """One message of a sequence on its sequence's pod stream: answered there, or lost with it."""

    __slots__ = ("call", "lifecycle")

    def __init__(self, call: StreamCall, lifecycle: Lifecycle):
        self.call = call
        self.lifecycle = lifecycle
        call.outstanding += 1

    def answered(self, answer: Message, error: bool) -> None:
        self.lifecycle.ended(grpc.StatusCode.UNKNOWN if error else grpc.StatusCode.OK, answer.size)
        self.call.outstanding -= 1
        self.call.answer_pieces(answer.pieces, answer.size)

    def lost(self, code: grpc.StatusCode, details: str, *, retryable: bool, unreachable: bool) -> None:
        self.lifecycle.failed(details, retryable=False, unreachable=unreachable)
        self.lifecycle.ended(grpc.StatusCode.UNAVAILABLE)
        self.call.outstanding -= 1

    def cancel(self) -> None:
        self.lifecycle.cancelled()
        self.call.outstanding -= 1


class PodStream:
    """One upstream `ModelStreamInfer` stream from a client stream to one pod for one model (an
    `UpstreamListener`): the messages waiting for their answers in the order they went, and the pod's
    answers relayed to the client as they come."""

    def __init__(self, call: StreamCall, backend: Backend, model: str):
        self.call = call
        self.backend = backend
        self.model = model
        self.decoupled = call.catalog.get(model).decoupled
        self.reader = MessageReader(call.max_message_bytes)
        # Messages sent and not answered yet, oldest first (a decoupled model's are not here: 0..n
        # answers show no end, so such a message counts as done once it is on its way).
        self.waiting: deque[StatelessMessage | PinnedMessage] = deque()
        self.closing = False
        self.leaving = False  # the pod takes no new messages: close once nothing waits here
        self.ended = False
        timeout = call.time_left()
        headers = call.upstream_headers(METHOD, None if timeout is None else format_timeout(max(timeout, 0.0)))
        self.upstream: UpstreamStream = call.upstreams.open(backend.address, self, headers, None, False)
        backend.pod_streams.add(self)
        # Kept: a pod removed from the fleet loses its series, and this stream must not bring it back.
        self.open_gauge = call.metrics.upstream_streams.labels(backend.address)
        self.open_gauge.inc()

    def carry(self, entry: StatelessMessage | PinnedMessage | None, message: Message) -> None:
        """Send `message`; `entry` (None for a decoupled model's) waits for its answer."""
        for piece in message.framed():
            self.upstream.send_data(piece, False)
        if entry is not None:
            self.waiting.append(entry)

    def close(self) -> None:
        """No more messages: the pod ends the stream once it has answered those on it."""
        if not self.closing and not self.ended:
            self.closing = True
            self.upstream.send_data(b"", True)

    def let_go(self) -> None:
        """The pod is leaving (`Backend.leaving`): later messages go to other pods, and this stream
        closes once nothing waits on it and no sequence of the client's lives there."""
        self.leaving = True
        self._close_if_let_go()

    def _close_if_let_go(self) -> None:
        if self.leaving and not self.waiting and not self.ended and not self.call.sequences.on(self.backend):
            self.call.forget_pod(self)
            self.close()

    def cancel(self) -> None:
        if self.ended:
            return
        self._end()
        self.upstream.cancel()
        while self.waiting:
            self.waiting.popleft().cancel()

    def _end(self) -> None:
        self.ended = True
        self.backend.pod_streams.discard(self)
        self.open_gauge.dec()

    # ---- UpstreamListener ---------------------------------------------------------------------------

    def on_upstream_headers(self, headers, end_stream: bool) -> None:
        if not end_stream or self.ended:
            return
        code = status_of(headers)
        if code is grpc.StatusCode.OK and self.closing and not self.waiting:
            self._end()
            self.call.pod_ended(self)
        else:  # the pod ended the stream itself: what was on it is lost, or refused (worth another pod)
            details = message_of(headers) or "the pod ended the stream"
            self._lost(code, details, retryable=says_model_missing(code, details), unreachable=False)

    def on_upstream_data(self, data, end_stream: bool) -> None:
        if self.ended:
            return
        try:
            answers = self.reader.feed(data)
        except (MessageTooLarge, BadMessage) as exc:
            self.upstream.cancel()
            self._lost(grpc.StatusCode.INTERNAL, f"the pod's answer is not readable: {exc}", retryable=False,
                       unreachable=False)
            return
        for answer in answers:
            self._relay(answer)
        if end_stream:
            self._lost(grpc.StatusCode.INTERNAL, "the pod ended its stream without a status", retryable=False,
                       unreachable=False)

    def on_upstream_failed(self, reason: str, retryable: bool) -> None:
        if not self.ended:
            self._lost(grpc.StatusCode.UNAVAILABLE, reason, retryable=retryable, unreachable=True)

    def _relay(self, answer: Message) -> None:
        call = self.call
        if answer.compressed:  # not asked for (no grpc-accept-encoding went to the pod)
            call.answer_error(f"INTERNAL: pod {self.backend.address} sent a compressed answer")
        elif self.waiting and not self.decoupled:
            self.waiting.popleft().answered(answer, wire.stream_answer_is_error(answer.first(1)))
        else:  # a decoupled model's answer: its message was counted when it went to the pod
            call.metrics.bytes_out.inc(answer.size)
            call.answer_pieces(answer.pieces, answer.size)
        self._close_if_let_go()
        call.freed()

    def _lost(self, code: grpc.StatusCode, details: str, *, retryable: bool, unreachable: bool) -> None:
        """The pod's stream ended before the client's: stateless messages on it are retried elsewhere
        (as a `ModelInfer` on a lost connection would be), its sequences end with a clear error."""
        self._end()
        call = self.call
        call.forget_pod(self)  # before any retry: none may come back to this stream
        address = self.backend.address
        reason = f"its pod {address} was lost ({code.name}: {details}); start it again"
        log.warning("upstream stream lost", extra={"backend": address, "code": code.name, "details": details})
        for model, sequence_id in call.sequences.lose(self.backend, reason):
            call.metrics.count(model, address, METHOD, code.name)
            call.answer_error(f"UNAVAILABLE: sequence {sequence_id} of model '{model}' ended: {reason}")
        pinned = sum(isinstance(entry, PinnedMessage) for entry in self.waiting)
        if pinned:
            call.answer_error(f"UNAVAILABLE: {pinned} request(s) in flight on pod {address} were lost")
        if not self.waiting and unreachable:
            call.router.pool.eject(self.backend, details)
        waiting, self.waiting = self.waiting, deque()
        for entry in waiting:
            entry.lost(code, details, retryable=retryable, unreachable=unreachable)
        call.pod_ended(self)
        call.freed()

