"""Unary calls routed per request, as HTTP/2 frames: `ModelInfer`, and `ModelReady` (clients ask it
before and between requests, so it takes the same cheap road).

The request message is held until it is complete (a unary call is one message), read for its model
(`wire.parse_infer_request` or `wire.parse_model_name`; a compressed message is decoded for this only),
and sent as it came, prefix and bytes untouched, on its pod's shared connection; the answer comes back
frame by frame. A request in a sequence goes to the pod its sequence started on. Which pod, whether
to try another, and what is counted: the request's `Lifecycle`.

`ModelReady` for a model no pod has ready is answered by the gateway itself: not ready. The other
per-model questions (`ModelMetadata`, `ModelConfig`, `ModelStatistics`) are the control service's
(gateway/control/), which answers for the fleet as a whole.
"""

from __future__ import annotations

import asyncio

import grpc
from tritonclient.grpc import service_pb2

from gateway import wire
from gateway.fleet.backends import Backend, NoBackendError
from gateway.routing.lifecycle import Lifecycle, Router, says_model_missing, says_version_missing
from gateway.routing.sequences import SequenceError
from gateway.transport.messages import (PREFIX_SIZE, BadMessage, Message, MessageTooLarge, decompress,
                                        message_of, status_of)

SERVICE = "/inference.GRPCInferenceService/"
PATHS = {SERVICE + method: method for method in ("ModelInfer", "ModelReady")}
_MODEL_NOT_READY = service_pb2.ModelReadyResponse(ready=False).SerializeToString()
# Enough of a ModelInferRequest to hold its routing fields, mostly; when not, the pieces are joined.
_ROUTING_BYTES = 4096


class UnaryCall:
    """One unary call (a `CallHandler` of the edge, an upstream listener of the pod's stream)."""

    __slots__ = ("router", "stream", "method", "messages", "lifecycle", "upstream", "reply_bytes", "over",
                 "_waiting")

    def __init__(self, router: Router, stream, method: str):
        self.router = router
        self.stream = stream
        self.method = method
        self.messages: list[Message] = []
        self.lifecycle: Lifecycle | None = None
        self.upstream = None
        self.reply_bytes = 0
        self.over = False
        self._waiting: asyncio.Task | None = None

    # ---- the client's side --------------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        self.messages.append(message)

    def on_end(self) -> None:
        if len(self.messages) != 1:
            size = sum(m.size + PREFIX_SIZE for m in self.messages)
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT,
                         f"a {self.method} call carries one gRPC message; this one has {size} bytes in "
                         f"{len(self.messages)} messages")
            return
        try:
            self._route(self.messages[0])
        except (wire.MalformedMessage, BadMessage) as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {self.method}Request: {exc}")
        except MessageTooLarge as exc:
            self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except SequenceError as exc:
            self._refuse(exc.code, str(exc))

    def on_cancel(self) -> None:
        if self.over:
            return
        self.over = True
        if self.upstream is not None:
            self.upstream.cancel()
        if self._waiting is not None:
            self._waiting.cancel()
        if self.lifecycle is not None:
            self.lifecycle.cancelled()

    def drain(self) -> None:
        """A unary call in flight finishes as it would."""

    # ---- routing --------------------------------------------------------------------------------

    def _readable(self, message: Message):
        """The message's bytes to read the route from: its first piece, or its decoded bytes."""
        if message.compressed:
            return decompress(message, self.stream.header("grpc-encoding", "identity"),
                              self.stream.client.door.max_message_bytes)
        return message.first(_ROUTING_BYTES)

    def _route(self, message: Message) -> None:
        data = self._readable(message)
        deadline = self.stream.deadline_s
        size = message.size + PREFIX_SIZE
        if self.method == "ModelReady":
            model = wire.parse_model_name(message.joined() if not message.compressed else data)
            if self._refused(model, inference=False):
                return
            if not self.router.pool.candidates(model):
                self.stream.send_message(_MODEL_NOT_READY)
                self.stream.end(grpc.StatusCode.OK)
                self.over = True
                return
            self.lifecycle = Lifecycle(self.router, model, self.method, deadline, request_bytes=size)
            self._attempt()
            return
        try:
            route = wire.parse_infer_request(data, 0, None if message.compressed else message.size)
        except wire.MessageIncomplete:
            route = wire.parse_infer_request(message.joined())
        if self._refused(route.model, inference=True):
            return
        if not route.in_sequence:
            self.lifecycle = Lifecycle(self.router, route.model, "ModelInfer", deadline, request_bytes=size)
            self._attempt()
            return
        # A sequence's state lives on its pod: its start picks one, the rest follow it; never retried.
        sequences = self.router.sequences
        pinned = sequences.pinned(route)
        self.lifecycle = Lifecycle(self.router, route.model, "ModelInfer", deadline, pinned=pinned,
                                   retryable=False, request_bytes=size)
        backend = self.lifecycle.try_pick()
        if backend is None:
            self._waiting = asyncio.get_running_loop().create_task(self._attempt_when_room(route))
            return
        sequences.bind(route, backend)
        self._send(backend)

    def _refused(self, model: str, inference: bool) -> bool:
        """Whether the call's API key refuses `model` (or its rate): then the call is answered here."""
        refusal = self.stream.grant.admit(model, inference)
        if refusal is not None:
            self._refuse(refusal.code, refusal.message)
        return refusal is not None

    def _attempt(self) -> None:
        backend = self.lifecycle.try_pick()
        if backend is None:
            self._waiting = asyncio.get_running_loop().create_task(self._attempt_when_room())
        else:
            self._send(backend)

    async def _attempt_when_room(self, route: wire.RequestRoute | None = None) -> None:
        try:
            backend = await self.lifecycle.pick()
        except NoBackendError as exc:
            self._fail(exc.code, str(exc))
            return
        finally:
            self._waiting = None
        if self.over:  # the client gave up while the call waited
            self.lifecycle.put_back(backend)
            return
        if route is not None:
            self.router.sequences.bind(route, backend)
        self._send(backend)

    def _send(self, backend: Backend) -> None:
        lifecycle = self.lifecycle
        try:
            timeout = lifecycle.timeout_header()
        except NoBackendError as exc:
            lifecycle.put_back(backend)
            self._fail(exc.code, str(exc))
            return
        lifecycle.sent(backend)
        self.upstream = self.router.upstreams.open(backend.address, self, self.stream.upstream_headers(timeout),
                                                   self.messages[0].framed(), True)

    # ---- the pod's answer -----------------------------------------------------------------------

    def on_upstream_headers(self, headers, end_stream: bool) -> None:
        if self.over:
            return
        if end_stream and not self.stream.answered and self.lifecycle.model:
            code = status_of(headers)
            if code is not grpc.StatusCode.OK and says_model_missing(code, message_of(headers)):
                details = message_of(headers)
                if not says_version_missing(details) and self.lifecycle.failed(details, retryable=True,
                                                                               model_missing=True):
                    self._attempt()
                    return
        self.stream.send_headers(headers, end_stream)
        if end_stream:
            self._finished(status_of(headers))

    def on_upstream_data(self, data, end_stream: bool) -> None:
        if self.over:
            return
        self.reply_bytes += len(data)
        self.stream.send_data(data, end_stream)
        if end_stream:
            self._finished(grpc.StatusCode.OK)

    def on_upstream_failed(self, reason: str, retryable: bool) -> None:
        if self.over:
            return
        self.upstream = None
        if self.lifecycle.failed(reason, retryable=retryable and not self.stream.answered):
            self._attempt()
            return
        self._fail(grpc.StatusCode.UNAVAILABLE, reason)

    # ---- ending ---------------------------------------------------------------------------------

    def _finished(self, code: grpc.StatusCode) -> None:
        self.over = True
        self.lifecycle.ended(code, self.reply_bytes)

    def _fail(self, code: grpc.StatusCode, message: str) -> None:
        if self.over:
            return
        self.stream.end(code, message)
        self._finished(code)

    def _refuse(self, code: grpc.StatusCode, message: str) -> None:
        """A request the gateway refuses before any pod sees it; counted like any other."""
        self.lifecycle = Lifecycle(self.router, "", self.method, self.stream.deadline_s)
        self._fail(code, message)
