"""Calls that are not on the data path, relayed unchanged to the gateway's own gRPC service.

ServerLive, ServerReady, ServerMetadata, RepositoryIndex, ModelStatistics, the admin calls, the
grpc.health.v1 service and any method the gateway does not know: each goes, headers and messages as
they came, over one loopback HTTP/2 connection to the grpcio service (`gateway.control.service`), which
answers them (merging over the pods, fanning an admin call out to every pod); the answer comes back
the same way.
"""

from __future__ import annotations

import grpc

from gateway import wire
from gateway.transport.messages import PREFIX_SIZE, BadMessage, Message, MessageTooLarge, decompress


class ControlRelay:
    """One relayed call: a `CallHandler` of the edge and the listener of its loopback stream.

    A per-model question of a call whose API key is limited to some models (`model_checked`) is held
    until its request names the model: the loopback stream opens only once the key allows it."""

    __slots__ = ("stream", "upstream", "over", "upstreams", "address", "checking")

    def __init__(self, upstreams, address: str, stream, model_checked: bool = False):
        self.stream = stream
        self.over = False
        self.upstreams = upstreams
        self.address = address
        self.checking = model_checked
        self.upstream = None
        if not model_checked:
            self._open()

    def _open(self) -> None:
        self.upstream = self.upstreams.open(self.address, self, self.stream.headers, None, False)

    def on_message(self, message: Message) -> None:
        if self.checking:
            self.checking = False
            if not self._admitted(message):
                return
            self._open()
        for piece in message.framed():
            self.upstream.send_data(piece, False)
        self.stream.release(message.size + PREFIX_SIZE)

    def _admitted(self, message: Message) -> bool:
        """Whether the key allows the model the request names; if not, the call is answered here."""
        stream = self.stream
        try:
            encoding = stream.header("grpc-encoding", "identity")
            data = (decompress(message, encoding, stream.client.door.max_message_bytes)
                    if message.compressed else message.joined())
            refusal = stream.grant.admit(wire.parse_model_name(data), inference=False)
        except (wire.MalformedMessage, BadMessage, MessageTooLarge) as exc:
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {stream.method}Request: {exc}")
            return False
        if refusal is not None:
            self._refuse(refusal.code, refusal.message)
            return False
        return True

    def _refuse(self, code: grpc.StatusCode, message: str) -> None:
        self.over = True
        self.stream.end(code, message)

    def on_end(self) -> None:
        if self.checking:  # no request message: nothing names a model, as for every model
            self.checking = False
            refusal = self.stream.grant.admit("", inference=False)
            if refusal is not None:
                self._refuse(refusal.code, refusal.message)
                return
            self._open()
        self.upstream.send_data(b"", True)

    def on_cancel(self) -> None:
        if not self.over:
            self.over = True
            if self.upstream is not None:
                self.upstream.cancel()

    def drain(self) -> None:
        """A relayed call finishes as it would."""

    def on_upstream_headers(self, headers, end_stream: bool) -> None:
        self.over = end_stream
        self.stream.send_headers(headers, end_stream)

    def on_upstream_data(self, data, end_stream: bool) -> None:
        self.over = end_stream
        self.stream.send_data(data, end_stream)

    def on_upstream_failed(self, reason: str, retryable: bool) -> None:
        if not self.over:
            self.over = True
            self.stream.end(grpc.StatusCode.UNAVAILABLE, reason)
