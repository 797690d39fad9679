"""Calls that are not on the data path, relayed unchanged to the gateway's own gRPC service.

ServerLive, ServerReady, ServerMetadata, RepositoryIndex, ModelStatistics, the admin calls, the
grpc.health.v1 service and any method the gateway does not know: each goes, headers and messages as
they came, over one loopback HTTP/2 connection to the grpcio service (`gateway.control.service`), which
answers them (merging over the pods, fanning an admin call out to every pod); the answer comes back
the same way.
"""

from __future__ import annotations

import grpc

from gateway.transport.messages import PREFIX_SIZE, Message


class ControlRelay:
    """One relayed call: a `CallHandler` of the edge and the listener of its loopback stream."""

    __slots__ = ("stream", "upstream", "over")

    def __init__(self, upstreams, address: str, stream):
        self.stream = stream
        self.over = False
        self.upstream = upstreams.open(address, self, stream.headers, None, False)

    def on_message(self, message: Message) -> None:
        for piece in message.framed():
            self.upstream.send_data(piece, False)
        self.stream.release(message.size + PREFIX_SIZE)

    def on_end(self) -> None:
        self.upstream.send_data(b"", True)

    def on_cancel(self) -> None:
        if not self.over:
            self.over = True
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
