"""One client's HTTP/2 connection to the gateway: its streams become calls, within the edge's limits.

Each stream the client opens is a `ClientStream`, handed to a call handler chosen by its :path (the
front door's `handler_for`). The stream's DATA is put back together into gRPC messages here, so every
call kind gets the same limits:
- a message whose prefix announces more than `max_message_bytes` is refused with RESOURCE_EXHAUSTED
  before its bytes are held (the rest of it is not read: RST_STREAM NO_ERROR after the answer);
- the request bytes held count against the worker's `BufferBudget`, which withholds flow-control
  window from clients while the worker holds too much;
- a client with calls open that goes silent is pinged, and one that leaves the PING unanswered is
  disconnected, its calls cancelled (a frozen client holds nothing for long); a client with no call
  open for `client_idle_timeout_s` is sent GOAWAY and disconnected;
- after `max_connection_age_s` a connection is told to go (GOAWAY, graceful: calls in flight finish
  within `max_connection_age_grace_s`), so that long-lived client channels spread over the replicas.

A handler (see `CallHandler`) is told of each complete request message, of the client's half-close and
of its cancel; it answers through the `ClientStream` (`send_headers`, `send_message`, `send_data`,
`end`), and says when it no longer holds a message's bytes (`release`).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Protocol

import grpc

from gateway.edge.access import OPEN
from gateway.edge.tls import speaks_h2
from gateway.transport.connection import Connection
from gateway.transport.h2 import MAX_STREAM_ID, NO_ERROR, REFUSED_STREAM
from gateway.transport.messages import (PREFIX_SIZE, BadMessage, Message, MessageReader, MessageTooLarge,
                                        error_headers, ok_headers, parse_timeout, prefix)

if TYPE_CHECKING:
    from gateway.edge.frontdoor import FrontDoor

_AGE_PING = b"max-age\x00"
_KEEPALIVE_PING = b"alive?\x00\x00"


class CallHandler(Protocol):
    """What serves one client call (routing.unary, routing.streams, the control relay)."""

    def on_message(self, message: Message) -> None: ...

    def on_end(self) -> None: ...  # the client half-closed: no more messages

    def on_cancel(self) -> None: ...  # the client reset the call or went away

    def drain(self) -> None: ...  # the gateway is shutting down: finish what is in flight, then end


class ClientStream:
    """One client call: its request headers and how to answer it."""

    __slots__ = ("client", "stream_id", "headers", "path", "deadline_s", "handler", "reader", "answered",
                 "finished", "client_done", "held", "window_held", "withheld", "authorization", "grant")

    def __init__(self, client: "ClientConnection", stream_id: int, headers: list[tuple[str, str]]):
        self.client = client
        self.stream_id = stream_id
        self.path = ""
        timeout = None
        self.authorization: str | None = None
        for name, value in headers:
            if name == ":path":
                self.path = value
            elif name == "grpc-timeout":
                timeout = parse_timeout(value)
            elif name == "authorization":
                self.authorization = value
        if self.authorization is not None and client.door.access is not None:
            # With API keys the credential is the gateway's to check: no pod, log or relay sees it.
            headers = [(name, value) for name, value in headers if name != "authorization"]
        self.headers = headers
        self.deadline_s = timeout
        self.grant = OPEN  # what the call's API key allows (edge.access); OPEN without keys
        self.handler: CallHandler | None = None
        self.reader = MessageReader(client.door.max_message_bytes)
        self.answered = False  # response headers went out
        self.finished = False  # trailers went out: the call is over for the client
        self.client_done = False  # the client half-closed
        self.held = 0  # request bytes received and not released yet
        self.window_held = False  # the handler has as many messages in flight as it takes
        self.withheld = 0  # bytes not granted back to the client meanwhile

    @property
    def method(self) -> str:
        return self.path.rpartition("/")[2]

    def header(self, name: str, default: str = "") -> str:
        return next((value for key, value in self.headers if key == name), default)

    def upstream_headers(self, timeout: str | None) -> list[tuple[str, str]]:
        """The request headers as they came, with grpc-timeout set to what is left of the deadline."""
        if timeout is None:
            return self.headers
        return [(k, timeout if k == "grpc-timeout" else v) for k, v in self.headers]

    # ---- answering ------------------------------------------------------------------------------

    def send_headers(self, headers, end_stream: bool = False) -> None:
        if self.finished:
            return
        self.answered = True
        self.client.send_headers(self.stream_id, headers, end_stream)
        if end_stream:
            self._over()

    def send_data(self, data, end_stream: bool = False) -> None:
        if self.finished:
            return
        self.client.send_data(self.stream_id, data, end_stream)
        if end_stream:
            self._over()

    def send_message(self, payload: bytes) -> None:
        """One response message (the response headers first, if they have not gone yet)."""
        if not self.answered:
            self.send_headers(ok_headers())
        self.send_data(prefix(len(payload)) + payload)

    def end(self, code: grpc.StatusCode, message: str = "") -> None:
        """End the call with `code`: as trailers after an answer began, else as a trailers-only answer."""
        self.send_headers(error_headers(code, message, not self.answered), True)

    def release(self, size: int) -> None:
        """The handler no longer holds `size` bytes of the request (a message: its size + PREFIX_SIZE)."""
        size = min(size, self.held)
        self.held -= size
        self.client.door.budget.released(size)

    def hold_window(self, held: bool) -> None:
        """While held, what the stream receives is not granted back to the client, whose window shrinks
        until it stops sending; letting go grants what was withheld."""
        self.window_held = held
        if not held and self.withheld:
            withheld, self.withheld = self.withheld, 0
            self.client.consumed(self.stream_id, withheld)

    def _over(self) -> None:
        self.finished = True
        self.client.done(self)


class ClientConnection(Connection):
    """One client's connection: a `ClientStream` per call, the edge's limits applied."""

    def __init__(self, door: "FrontDoor"):
        super().__init__(client=False, limits=door.h2_limits, manual_flow=True)
        self.door = door
        self.streams: dict[int, ClientStream] = {}
        self.last_stream_id = 0
        self.closing = False  # GOAWAY went out: new streams are refused
        self.last_read = 0.0
        self.idle_since = 0.0  # when the last call ended (or the connection opened)
        self._ping_sent = 0.0  # when the outstanding keepalive PING went out (0: none)
        self._age_timer = None
        self._loop = None

    def connection_made(self, transport) -> None:
        self._loop = asyncio.get_running_loop()
        self.last_read = self.idle_since = self._loop.time()
        self.door.clients.add(self)
        self.door.metrics.client_connections.inc()
        super().connection_made(transport)
        age = self.door.max_connection_age_s
        if age:  # +-10% so that connections made together do not all go at once
            self._age_timer = self._loop.call_later(age * random.uniform(0.9, 1.1), self._aged)
        if not speaks_h2(transport):
            self.close()

    def data_received(self, data: bytes) -> None:
        self.last_read = self._loop.time()
        super().data_received(data)

    # ---- streams in -----------------------------------------------------------------------------

    def on_headers(self, stream_id: int, headers, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client end its request stream
            if end_stream:
                self._client_done(stream)
            return
        if stream_id <= self.last_stream_id:  # a stream that is over: nothing more is read of it
            return
        if self.closing or self.door.closing:
            self.reset(stream_id, REFUSED_STREAM)
            return
        self.last_stream_id = stream_id
        stream = self.streams[stream_id] = ClientStream(self, stream_id, headers)
        self.door.metrics.client_streams.inc()
        stream.handler = self.door.handler_for(stream)
        if end_stream and not stream.finished:
            self._client_done(stream)

    def on_data(self, stream_id: int, data, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.finished or stream.client_done:
            self.consumed(stream_id, len(data))  # not held: the connection's window comes back at once
            return
        stream.held += len(data)
        self.door.budget.received(self, stream_id, len(data))
        try:
            messages = stream.reader.feed(data)
        except MessageTooLarge as exc:
            self.door.metrics.refusals.labels("message_too_large").inc()
            self._refuse(stream, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            return
        except BadMessage as exc:
            self._refuse(stream, grpc.StatusCode.INTERNAL, str(exc))
            return
        for message in messages:
            if stream.finished:
                stream.release(message.size + PREFIX_SIZE)
            else:
                stream.handler.on_message(message)
        if end_stream:
            self._client_done(stream)

    def _client_done(self, stream: ClientStream) -> None:
        stream.client_done = True
        if stream.finished:
            return
        if stream.reader.partial:
            self._refuse(stream, grpc.StatusCode.INTERNAL, "the request stream ended inside a message")
            return
        stream.handler.on_end()

    def _refuse(self, stream: ClientStream, code: grpc.StatusCode, message: str) -> None:
        """End a call the edge refuses; its handler is cancelled (nothing of it goes on)."""
        stream.handler.on_cancel()
        stream.end(code, message)

    def on_reset(self, stream_id: int, code: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.client_done = True
            stream.finished = True
            stream.handler.on_cancel()
            self.done(stream)

    def on_lost(self, exc) -> None:
        self.door.clients.discard(self)
        self.door.metrics.client_connections.dec()
        if self._age_timer is not None:
            self._age_timer.cancel()
        streams = list(self.streams.values())
        for stream in streams:
            stream.finished = True
            stream.handler.on_cancel()
            self.done(stream)

    def consumed(self, stream_id: int, size: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.window_held:
            stream.withheld += size  # granted once its handler has room again (hold_window)
            return
        super().consumed(stream_id, size)

    def done(self, stream: ClientStream) -> None:
        """The call is over: what it still holds is released; the rest of its request is not read."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.door.metrics.client_streams.dec()
        stream.release(stream.held)
        stream.hold_window(False)  # the connection's share of what was withheld comes back
        if not stream.client_done and not self.closed:
            # RFC 9113 8.1: a complete answer before the whole request; the client stops sending.
            stream.client_done = True
            self.reset(stream.stream_id, NO_ERROR)
        if not self.streams:
            self.idle_since = self._loop.time()
            if self.closing:
                self.finish_sending()

    # ---- going away -----------------------------------------------------------------------------

    def go_away(self) -> None:
        """Graceful GOAWAY: calls in flight finish, new ones are refused, then FIN once none is left."""
        self.closing = True
        self.goaway(self.last_stream_id)
        if not self.streams:
            self.finish_sending()

    def _aged(self) -> None:
        """Max connection age: GOAWAY(max id) and a PING; once the PING comes back the client has
        seen the GOAWAY, so the streams it opened are known and the final GOAWAY can name the last."""
        self._age_timer = None
        if self.closing or self.closed:
            return
        self.door.metrics.disconnects.labels("max_age").inc()
        self.goaway(MAX_STREAM_ID)
        self.ping(_AGE_PING)
        self._age_timer = self._loop.call_later(self.door.max_connection_age_grace_s, self._age_grace_over)

    def _age_grace_over(self) -> None:
        self._age_timer = None
        for stream in list(self.streams.values()):
            stream.finished = True
            stream.handler.on_cancel()
            self.done(stream)
        self.close()

    def on_ping_ack(self, payload: bytes) -> None:
        if payload == _AGE_PING:
            self.go_away()
        self._ping_sent = 0.0

    def keepalive(self, now: float) -> None:
        """Called by the front door's sweep: ping a silent client with calls open, disconnect one that
        left its PING unanswered or one idle for too long."""
        door = self.door
        if self.closed:
            return
        if self._ping_sent and now - self._ping_sent >= door.client_keepalive_timeout_s:
            door.metrics.disconnects.labels("ping_timeout").inc()
            if self.transport is not None:
                self.transport.abort()  # on_lost follows: the client's calls are cancelled
            return
        silent = now - self.last_read
        if self.streams:
            if door.client_keepalive_time_s and not self._ping_sent and silent >= door.client_keepalive_time_s:
                self._ping_sent = now
                self.ping(_KEEPALIVE_PING)
        elif door.client_idle_timeout_s and now - self.idle_since >= door.client_idle_timeout_s and not self.closing:
            door.metrics.disconnects.labels("idle").inc()
            self.go_away()
            # A client that does not close its side after the GOAWAY and FIN is not waited for.
            self._loop.call_later(door.client_keepalive_timeout_s or 10.0, self.close)
