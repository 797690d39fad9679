"""The gateway's connections to pods: one HTTP/2 client connection per pod, shared by every call to it.

    upstreams = Upstreams(keepalive_time_s, keepalive_timeout_s)
    upstreams.start()                                  # in the event loop: the keepalive task
    stream = upstreams.open(address, listener, headers, body, end)
    stream.send_data(piece, end)                       # more of the request (a stream's next message)
    stream.cancel()                                    # the client gave up: RST_STREAM(CANCEL) to the pod
    upstreams.retire(address)                          # the pod left the fleet
    upstreams.close()

`open` sends `headers`, then the `body` pieces (a list, possibly empty; None: DATA follows through
`send_data`), ending the request stream when `end`. The connection is opened on first use, and the
stream waits for it. The pod's answer reaches `listener` (any object with these three methods, an
`UpstreamListener`), in arrival order:

    on_upstream_headers(headers, end_stream)   # the response headers; the trailers when end_stream
    on_upstream_data(data, end_stream)         # response DATA as it arrives (views of the read)
    on_upstream_failed(reason, retryable)      # the stream ended without trailers: the connection
                                               # failed, closed or was lost, GOAWAY left the stream
                                               # out, or the pod reset it. `retryable`: the pod did
                                               # not process it (or its connection was lost)

Keepalive: a pod silent for `keepalive_time_s` while streams wait on it is pinged, and a PING left
unanswered for `keepalive_timeout_s` drops the connection (its streams fail, and are retried on another
pod like those of any lost connection); a connection that does not open within `keepalive_timeout_s`
fails its streams the same way.

With `tls` (gateway.edge.tls.UpstreamTls), each connection is TLS with ALPN h2 (Triton's
`--grpc-use-ssl`); a handshake that fails is a failed connection like any other.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

from gateway.edge.tls import UpstreamTls
from gateway.transport.connection import Connection
from gateway.transport.h2 import CANCEL, MAX_STREAM_ID, REFUSED_STREAM

# Keepalive pings to a pod between two of its answers; see UpstreamConnection.keepalive.
MAX_PINGS_WITHOUT_DATA = 2


class UpstreamListener(Protocol):
    def on_upstream_headers(self, headers: list[tuple[str, str]], end_stream: bool) -> None: ...

    def on_upstream_data(self, data, end_stream: bool) -> None: ...

    def on_upstream_failed(self, reason: str, retryable: bool) -> None: ...


class UpstreamStream:
    """One request stream to a pod; what its listener sends after the headers goes through here."""

    __slots__ = ("connection", "listener", "stream_id", "_queued", "_end")

    def __init__(self, connection: "UpstreamConnection", listener: UpstreamListener):
        self.connection = connection
        self.listener = listener
        self.stream_id = 0  # 0 while the connection is being opened
        self._queued: list = []
        self._end = False

    def send_data(self, data, end_stream: bool) -> None:
        if self.stream_id:
            self.connection.send_data(self.stream_id, data, end_stream)
        else:
            self._queued.append(data)
            self._end = end_stream

    def cancel(self) -> None:
        self.connection.cancel(self)


class UpstreamConnection(Connection):
    """The gateway as the client of one pod: streams multiplexed on one connection."""

    def __init__(self) -> None:
        super().__init__(client=True)
        self.calls: dict[int, UpstreamStream] = {}
        self.next_id = 1
        self.connected = False
        self.going_away = False
        self._queued: list[tuple[UpstreamStream, list, list | None, bool]] = []
        # Keepalive: whether the pod sent HEADERS or DATA since the last look, how many PINGs went
        # out since it last did, and the timer that drops the connection if the latest goes unanswered.
        self.heard = False
        self.silent_pings = 0
        self._ping_timer: asyncio.TimerHandle | None = None
        self._lost_reason = ""

    @property
    def busy(self) -> bool:
        """Streams are on it, or queued for it while it connects."""
        return bool(self.calls or self._queued)

    @property
    def usable(self) -> bool:
        return not (self.closed or self.going_away) and self.next_id < MAX_STREAM_ID - 2

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.connected = True
        queued, self._queued = self._queued, []
        for stream, headers, body, end in queued:
            self._start(stream, headers, body, end)

    def open(self, listener: UpstreamListener, headers, body: list | None, end: bool) -> UpstreamStream:
        stream = UpstreamStream(self, listener)
        if self.connected:
            self._start(stream, headers, body, end)
        else:
            self._queued.append((stream, headers, body, end))
        return stream

    def _start(self, stream: UpstreamStream, headers, body: list | None, end: bool) -> None:
        if stream._queued:  # DATA sent through the stream while the connection was being opened
            body, end = [*(body or ()), *stream._queued], stream._end
            stream._queued = []
        stream_id, self.next_id = self.next_id, self.next_id + 2
        stream.stream_id = stream_id
        self.calls[stream_id] = stream
        self.open_stream(stream_id)
        self.send_headers(stream_id, headers, end and body is None)
        if body is not None:
            for piece in body[:-1]:
                self.send_data(stream_id, piece, False)
            self.send_data(stream_id, body[-1] if body else b"", end)

    def cancel(self, stream: UpstreamStream) -> None:
        self._queued = [q for q in self._queued if q[0] is not stream]
        if stream.stream_id and self.calls.get(stream.stream_id) is stream:
            del self.calls[stream.stream_id]
            self.reset(stream.stream_id, CANCEL)
        self._close_when_idle()

    def retire(self) -> None:
        """The pod left the fleet: take no new streams, and close once those on the way are answered."""
        self.going_away = True
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.going_away and not self.busy and not self.closed:
            self.close()

    # ---- keepalive ------------------------------------------------------------------------------

    def keepalive(self, timeout_s: float) -> None:
        """Called every keepalive interval: ping a pod that sent nothing while streams waited on it.

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
            self.transport.abort()  # connection_lost follows: its streams fail (and are retried)

    # ---- answers from the pod -------------------------------------------------------------------

    def on_headers(self, stream_id: int, headers, end_stream: bool) -> None:
        stream = self._answering(stream_id, end_stream)
        if stream is not None:
            stream.listener.on_upstream_headers(headers, end_stream)
            if end_stream:
                self._close_when_idle()

    def on_data(self, stream_id: int, data, end_stream: bool) -> None:
        stream = self._answering(stream_id, end_stream)
        if stream is not None:
            stream.listener.on_upstream_data(data, end_stream)
            if end_stream:
                self._close_when_idle()

    def _answering(self, stream_id: int, end_stream: bool):
        """The stream an answer frame belongs to (None: one already ended or cancelled); the pod
        was heard from, and a stream that ends here leaves the connection's calls."""
        self.heard = True
        if end_stream:
            return self.calls.pop(stream_id, None)
        return self.calls.get(stream_id)

    def on_reset(self, stream_id: int, code: int) -> None:
        stream = self.calls.pop(stream_id, None)
        if stream is not None:
            stream.listener.on_upstream_failed(f"the pod reset the stream (HTTP/2 error {code})",
                                               code == REFUSED_STREAM)
        self._close_when_idle()

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.going_away = True
        # Streams above last_stream_id were never processed: safe to send elsewhere.
        for stream_id in [s for s in self.calls if s > last_stream_id]:
            self.calls.pop(stream_id).listener.on_upstream_failed("the pod is going away", True)
        self._close_when_idle()

    def on_lost(self, exc) -> None:
        self.going_away = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        if self._lost_reason:
            reason = self._lost_reason
        else:
            reason = f"connection to the pod lost: {exc}" if exc else "connection to the pod closed"
        streams = [q[0] for q in self._queued] + list(self.calls.values())
        self._queued, self.calls = [], {}
        for stream in streams:
            stream.listener.on_upstream_failed(reason, True)


class Upstreams:
    """One connection per pod address, opened on first use; retired ones finish their streams."""

    def __init__(self, keepalive_time_s: float, keepalive_timeout_s: float, tls: UpstreamTls | None = None):
        self.keepalive_time_s = keepalive_time_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.tls = tls
        self._ssl: ssl.SSLContext | None = tls.context() if tls is not None else None
        self._connections: dict[str, UpstreamConnection] = {}
        # Every connection, the retired ones with streams still on them included: all are pinged.
        self._all: set[UpstreamConnection] = set()
        self._keepalive_task: asyncio.Task | None = None
        self._connecting: set[asyncio.Task] = set()  # held: the loop keeps only weak references to tasks

    def start(self) -> None:
        self._keepalive_task = asyncio.get_running_loop().create_task(self._keep_alive())

    def open(self, address: str, listener: UpstreamListener, headers, body: list | None,
             end: bool) -> UpstreamStream:
        return self.connection(address).open(listener, headers, body, end)

    def connection(self, address: str) -> UpstreamConnection:
        connection = self._connections.get(address)
        if connection is None or not connection.usable:
            host, _, port = address.rpartition(":")
            connection = self._connections[address] = self.connect(host.strip("[]"), int(port))
            self._all.add(connection)
        return connection

    def connect(self, host: str, port: int) -> UpstreamConnection:
        connection = UpstreamConnection()
        loop = asyncio.get_running_loop()
        tls = {} if self._ssl is None else {"ssl": self._ssl, "server_hostname": self.tls.hostname(host)}

        async def connect():
            # A pod on a node that went away answers no SYN: without a bound, the streams queued for the
            # connection would wait for the kernel to give up (minutes).
            timeout = self.keepalive_timeout_s
            try:
                await asyncio.wait_for(loop.create_connection(lambda: connection, host, port, **tls), timeout)
            except TimeoutError:
                connection.on_lost(ConnectionError(f"no connection within {timeout:g} s"))
            except OSError as exc:
                connection.on_lost(exc)

        task = loop.create_task(connect())
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return connection

    def retire(self, address: str) -> None:
        connection = self._connections.pop(address, None)
        if connection is not None:
            connection.retire()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_time_s)
            self._all = {c for c in self._all if not c.closed and (c.busy or not c.going_away)}
            for connection in self._all:
                connection.keepalive(self.keepalive_timeout_s)

    def close(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        for connection in self._all:
            connection.close()
        self._connections.clear()
