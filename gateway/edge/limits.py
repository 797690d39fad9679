"""Limits one worker applies to its clients together: the budget of request bytes it holds.

Every request byte a client sends is held by the gateway until its call is done with it (a unary
request until its answer has begun, since a retry resends it). HTTP/2 flow control is what bounds
this: a byte is granted back to the client (WINDOW_UPDATE) at once while the worker holds less than
`max_buffered_bytes`, and only once enough is released otherwise. Over the budget, clients can send
at most the windows already granted: the gateway's memory stays bounded however many clients send,
and a sender resumes as soon as calls before it are done.
"""

from __future__ import annotations

from collections import deque

from gateway.metrics import GatewayMetrics


class BufferBudget:
    def __init__(self, max_bytes: int, metrics: GatewayMetrics):
        self.max_bytes = max_bytes
        self.held = 0
        self._gauge = metrics.buffered_bytes
        self._withheld_gauge = metrics.withheld_bytes
        self._withheld: deque = deque()  # (connection, stream_id, bytes) not granted back yet

    def received(self, connection, stream_id: int, size: int) -> None:
        """`size` bytes arrived on a stream of `connection` and are held from now on."""
        self.held += size
        self._gauge.inc(size)
        if self.held <= self.max_bytes:
            connection.consumed(stream_id, size)
        else:
            self._withheld.append((connection, stream_id, size))
            self._withheld_gauge.inc(size)

    def released(self, size: int) -> None:
        """`size` held bytes are no longer held: grant withheld windows while there is room again."""
        self.held -= size
        self._gauge.dec(size)
        while self._withheld and self.held <= self.max_bytes:
            connection, stream_id, withheld = self._withheld.popleft()
            self._withheld_gauge.dec(withheld)
            if not connection.closed:
                connection.consumed(stream_id, withheld)
