"""`ModelStreamInfer` at the frame level: one client stream, its messages routed one by one.

The edge hands each complete request message of a client stream to its `StreamCall`, which routes it
over one upstream `ModelStreamInfer` stream per pod it uses (`stream_upstreams.PodStream`):
- a stateless model's request is balanced like a unary call: it goes to the least busy pod (retried
  on another, like a unary call, while its answer has not reached the client), and its answer comes
  back on the client's stream when it is ready (completion order across pods) — so a long-lived
  camera stream spreads over the fleet instead of pinning one pod;
- a request in a sequence (non-zero `sequence_id`) goes to the pod its `sequence_start` went to
  (`routing.sequences`), which keeps the sequence's order; a pod lost mid-stream ends its sequences
  with a clear UNAVAILABLE error message, and later messages of those sequences get
  FAILED_PRECONDITION until the client starts them again;
- a decoupled model's request (0..n responses) is balanced per message too; its answers are relayed
  as they come.
Per-message errors are sent as `error_message` on the stream, as Triton does, and the stream goes on.

At most MAX_OUTSTANDING messages of one stream are in flight; beyond that the stream's received bytes
are not granted back to the client (HTTP/2 flow control), so a client that sends faster than the fleet
answers is slowed down instead of buffered. The client half-closing ends the stream (status OK) once
every outstanding message is answered; its reset cancels them on their pods; the gateway's drain stops
taking messages, lets those in flight finish and ends the stream with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import grpc

from gateway import wire
from gateway.fleet.backends import Backend, NoBackendError
from gateway.routing.lifecycle import Lifecycle, Router
from gateway.routing.sequences import SequenceError, stream_sequences
from gateway.routing.stream_upstreams import METHOD, PinnedMessage, PodStream, StatelessMessage, describe
from gateway.transport.messages import (PREFIX_SIZE, BadMessage, Message, MessageTooLarge, decompress, ok_headers,
                                        prefix)

SERVICE = "/inference.GRPCInferenceService/"
PATH = SERVICE + METHOD
# Messages of one stream in flight at once; a client that sends more waits for flow-control window.
MAX_OUTSTANDING = 256
# Answers up to this size go to the client as one DATA frame (HTTP/2's default frame size).
_JOINED_BELOW = 16 * 1024
SHUTTING_DOWN = "the gateway is shutting down; reconnect to continue the stream"
# Not passed on to the pods: each attempt sets its own deadline, and a pod's answers must come
# uncompressed (a stateless message's answer is rewrapped here).
_NOT_FORWARDED = frozenset({"grpc-timeout", "grpc-accept-encoding"})


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
        self.stateless: set[StatelessMessage] = set()
        self.pods: dict[tuple[Backend, str], PodStream] = {}  # by pod and model
        self.sequences = stream_sequences()
        self.picking: asyncio.Task | None = None  # a sequence's or decoupled message's wait for a pod
        self.pumping = False
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
        for message in list(self.stateless):
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
        if self.pumping:  # a message answered at once (its deadline had passed) makes room from inside
            return
        self.pumping = True
        try:
            while self.waiting and self.picking is None and self.outstanding < MAX_OUTSTANDING and not self.over:
                self._dispatch(self.waiting.popleft())
        finally:
            self.pumping = False
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
        refusal = self.stream.grant.admit(route.model)
        if refusal is not None:
            self.stream.release(message.size + PREFIX_SIZE)
            self.metrics.count(route.model, "none", METHOD, refusal.code.name)
            self.answer_error(describe(route, refusal.code, refusal.message))
            return
        if route.in_sequence or self.catalog.get(route.model).decoupled:
            self._to_pod_stream(route, message)
        else:
            StatelessMessage(self, route, message).start()

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
        lifecycle.sent(backend)
        pod = self.pod_stream(backend, route.model)
        if pod.decoupled:
            pod.carry(None, message)
            lifecycle.succeeded()
        else:
            pod.carry(PinnedMessage(self, lifecycle), message)
        self.stream.release(message.size + PREFIX_SIZE)

    def pod_stream(self, backend: Backend, model: str) -> PodStream:
        """This stream's upstream stream to `backend` for `model`, opened at its first message."""
        key = (backend, model)
        pod = self.pods.get(key)
        if pod is None:
            pod = self.pods[key] = PodStream(self, backend, model)
        return pod

    # ---- answering --------------------------------------------------------------------------------

    def answer(self, payload: bytes) -> None:
        """One `ModelStreamInferResponse` to the client."""
        if not self.over:
            self.stream.send_message(payload)

    def answer_pieces(self, pieces: list, size: int) -> None:
        """A pod's `ModelStreamInferResponse` of `size` bytes, as the pieces it came in (views of the
        reads, not copied), except that a small answer goes as one DATA frame."""
        if self.over:
            return
        if not self.stream.answered:
            self.stream.send_headers(ok_headers())
        first = prefix(size)
        if size <= _JOINED_BELOW:
            self.stream.send_data(b"".join((first, *pieces)))
            return
        self.stream.send_data(first)
        for piece in pieces:
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
        if self.over or not (self.client_done or self.draining) or self.waiting or self.picking or self.stateless:
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

    def forget_pod(self, pod: PodStream) -> None:
        """`pod` takes no more messages: a later one for its backend opens a new stream."""
        key = (pod.backend, pod.model)
        if self.pods.get(key) is pod:
            del self.pods[key]

    def pod_ended(self, pod: PodStream) -> None:
        self.forget_pod(pod)
        self._finish_if_done()

    def _close(self) -> None:
        self.over = True
        self.metrics.active_streams.dec()


