"""One HTTP/2 connection on an asyncio transport: the sans-IO core (`gateway.transport.h2`) fed from
the socket, its events handed to hook methods, its output written once per event-loop turn.

Subclasses implement what the streams carry (`on_headers`, `on_data`, `on_reset`, `on_goaway`,
`on_ping_ack`, `on_lost`) and call the send methods. What a connection sends goes into its own output
buffer, written once per turn of the event loop (scheduled on the first write of the turn), so a
turn's frames leave in one system call and callers never flush. Large outputs go to the socket as a
list of chunks, DATA payloads without a copy; received DATA is handed on as views of the read.

Flow control of what is received: by default bytes are granted back to the peer as they arrive; with
`manual_flow`, only once the upper layer says it no longer holds them (`consumed`), so that what a
peer can make the gateway buffer is bounded by the windows.
"""

from __future__ import annotations

import asyncio

from gateway.transport.h2 import (CANCEL, NO_ERROR, PROTOCOL_ERROR, ConnectionFailed, ConnectionTerminated,
                                  DataReceived, H2Connection, H2Limits, HeadersReceived, PingAckReceived, StreamReset)

# A turn's output larger than this goes to the socket as a list of chunks; smaller, as one joined copy.
WRITELINES_FROM = 1 << 14


class Connection(asyncio.Protocol):
    """One HTTP/2 connection; `client` says which side of it the gateway is."""

    def __init__(self, client: bool, limits: H2Limits | None = None, manual_flow: bool = False):
        self.client = client
        self.core = H2Connection(client, limits, manual_flow)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.eof_sent = False  # FIN went out: nothing more may be written, though the peer still is read
        self.failure: str | None = None  # why the core ended the connection, if it did
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._write_scheduled = False
        self._closing = False  # close() was called: what is buffered later is not written

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        try:
            self._event_loop = asyncio.get_running_loop()
        except RuntimeError:  # driven by hand, without an event loop: the caller calls write_out()
            self._event_loop = None
        self.core.initiate_connection()
        self._schedule_write()

    def data_received(self, data: bytes) -> None:
        for event in self.core.receive_data(data):
            kind = type(event)
            if kind is DataReceived:
                self.on_data(event.stream_id, event.data, event.end_stream)
            elif kind is HeadersReceived:
                self.on_headers(event.stream_id, event.headers, event.end_stream)
            elif kind is StreamReset:
                self.on_reset(event.stream_id, event.error_code)
            elif kind is PingAckReceived:
                self.on_ping_ack(event.data)
            elif kind is ConnectionTerminated:
                self.on_goaway(event.last_stream_id, event.error_code)
            elif kind is ConnectionFailed:
                self.failure = event.reason
                self.close()
        if self.core.output_size:
            self._schedule_write()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.on_lost(exc)

    # ---- writing ------------------------------------------------------------------------------

    def _schedule_write(self) -> None:
        if not self._write_scheduled and self._event_loop is not None:
            self._write_scheduled = True
            self._event_loop.call_soon(self.write_out)

    def write_out(self) -> None:
        """Write what this connection buffered; the scheduled write of each turn calls this."""
        self._write_scheduled = False
        size = self.core.output_size
        out = self.core.data_to_send()
        if out and self.transport is not None and not (self.closed or self.eof_sent or self._closing):
            if size > WRITELINES_FROM:
                self.transport.writelines(out)  # large payloads go to the socket without a copy
            else:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    # ---- what the upper layer sends -----------------------------------------------------------

    def open_stream(self, stream_id: int) -> None:
        self.core.open_stream(stream_id)

    def send_headers(self, stream_id: int, headers, end_stream: bool) -> None:
        """A header block, after any DATA of the stream still waiting for the peer's window."""
        self.core.send_headers(stream_id, headers, end_stream)
        self._schedule_write()

    def send_data(self, stream_id: int, data, end_stream: bool) -> None:
        self.core.send_data(stream_id, data, end_stream)
        self._schedule_write()

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        self.core.reset_stream(stream_id, code)
        self._schedule_write()

    def ping(self, payload: bytes) -> None:
        """A PING with 8 bytes of `payload`, which the peer sends back in its ACK."""
        self.core.ping(payload)
        self._schedule_write()

    def goaway(self, last_stream_id: int, code: int = NO_ERROR) -> None:
        self.core.close_connection(code, last_stream_id=last_stream_id)
        self._schedule_write()

    def consumed(self, stream_id: int, size: int) -> None:
        """The upper layer no longer holds `size` received bytes of `stream_id`: with manual flow
        control, they may now be granted back to the peer (until then its windows stay shrunk)."""
        if self.core.manual_flow:
            self.core.acknowledge_received_data(size, stream_id)
            if self.core.output_size:
                self._schedule_write()

    def fail(self, reason: str) -> None:
        """End the connection for a protocol error of the peer's: GOAWAY, then close."""
        self.failure = reason
        self.core.close_connection(PROTOCOL_ERROR, reason.encode()[:256])
        self.close()

    def close(self) -> None:
        self.write_out()
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def finish_sending(self) -> None:
        """Send what is queued, then FIN; keep reading until the peer closes its side (then the
        transport closes, since `eof_received` returns None)."""
        self.write_out()
        if self.transport is None or self.closed or self.eof_sent:
            return
        self.eof_sent = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    # ---- what the streams carry (subclasses) ---------------------------------------------------

    def on_headers(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        raise NotImplementedError

    def on_data(self, stream_id: int, data: memoryview | bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def on_reset(self, stream_id: int, code: int) -> None:
        pass

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        pass

    def on_ping_ack(self, payload: bytes) -> None:
        pass

    def on_lost(self, exc) -> None:
        pass
