"""Keepalive on the gateway's connections to pods (`UpstreamConnection.keepalive`): a pod silent
while calls wait on it is pinged, at most twice between two of its answers (a gRPC server counts
closer pings as strikes), and a ping left unanswered drops the connection; a connection that does not
open within the same timeout hands its queued calls back."""

from __future__ import annotations

import asyncio
import socket

from gateway.fleet.upstreams import MAX_PINGS_WITHOUT_DATA, UpstreamConnection, Upstreams
from gateway.transport.h2 import ACK, PING, frame


class RecordingTransport:
    """Keeps what the connection writes; `abort` records that the connection was dropped."""

    def __init__(self, connection):
        self.connection = connection
        self.written = bytearray()
        self.aborted = False

    def write(self, data):
        self.written += data

    def writelines(self, chunks):
        for chunk in chunks:
            self.written += chunk

    def abort(self):
        self.aborted = True

    def close(self):
        pass

    def pings(self) -> list[bytes]:
        """The payloads of the PINGs (not ACKs) written so far."""
        self.connection.write_out()  # what the connection buffered in this turn of the event loop
        found, data, position = [], bytes(self.written), 24  # after the client preface
        while position + 9 <= len(data):
            size = int.from_bytes(data[position:position + 3], "big")
            kind, flags = data[position + 3], data[position + 4]
            if kind == PING and not flags & ACK:
                found.append(data[position + 9:position + 9 + size])
            position += 9 + size
        return found


def _connection_with_a_waiting_call() -> tuple[UpstreamConnection, RecordingTransport]:
    connection = UpstreamConnection()
    transport = RecordingTransport(connection)
    connection.connection_made(transport)
    connection.calls[1] = object()  # a call waiting for its answer
    return connection, transport


def _ack(connection: UpstreamConnection, payload: bytes) -> None:
    connection.data_received(frame(PING, ACK, 0, payload))


async def _until(condition, timeout_s: float = 10.0) -> bool:
    """Whether `condition()` came true within `timeout_s`, the event loop running meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_a_silent_pod_is_pinged_at_most_twice_until_it_answers_a_call():
    async def scenario():
        connection, transport = _connection_with_a_waiting_call()
        connection.keepalive(timeout_s=60)
        connection.keepalive(timeout_s=60)  # the first PING is not answered yet: no second one
        assert len(transport.pings()) == 1
        for _ in range(MAX_PINGS_WITHOUT_DATA + 2):
            _ack(connection, transport.pings()[-1])
            connection.keepalive(timeout_s=60)
        assert len(transport.pings()) == MAX_PINGS_WITHOUT_DATA
        # An answer on a stream (even one the gateway forgot) starts a new silent period.
        connection.on_headers(99, [(":status", "200")], end_stream=False)
        connection.keepalive(timeout_s=60)  # heard from the pod since the last look: no PING
        assert len(transport.pings()) == MAX_PINGS_WITHOUT_DATA
        connection.keepalive(timeout_s=60)
        assert len(transport.pings()) == MAX_PINGS_WITHOUT_DATA + 1
        _ack(connection, transport.pings()[-1])
        assert not transport.aborted

    asyncio.run(scenario())


def test_a_pod_with_no_call_waiting_is_not_pinged():
    async def scenario():
        connection, transport = _connection_with_a_waiting_call()
        connection.calls.clear()
        for _ in range(3):
            connection.keepalive(timeout_s=60)
        assert transport.pings() == []

    asyncio.run(scenario())


def test_an_unanswered_ping_drops_the_connection_and_an_answered_one_does_not():
    async def scenario():
        answered, answered_transport = _connection_with_a_waiting_call()
        silent, silent_transport = _connection_with_a_waiting_call()
        answered.keepalive(timeout_s=0.05)
        silent.keepalive(timeout_s=0.05)
        _ack(answered, answered_transport.pings()[-1])
        # The answered PING's timer is gone at once: nothing is left that could drop its connection.
        assert answered._ping_timer is None
        assert await _until(lambda: silent_transport.aborted), "the unanswered PING never dropped its connection"
        assert not answered_transport.aborted
        assert "did not answer a PING within 0.05 s" in silent._lost_reason

    asyncio.run(scenario())


def test_a_connection_that_does_not_open_in_time_hands_its_queued_calls_back():
    """A pod whose node went away answers no SYN. A listener whose backlog is full drops SYNs the
    same way: the calls queued for a connection to it must come back within the timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # takes the only place in the backlog

    async def scenario():
        upstreams = Upstreams(keepalive_time_s=10, keepalive_timeout_s=0.3)
        handed_back: list[tuple] = []

        class Call:  # a call queued for the connection, as its listener
            def on_upstream_failed(self, reason, retryable):
                handed_back.append((self, reason, retryable))

        upstreams.open(f"127.0.0.1:{port}", Call(), [], [b""], True)
        await _until(lambda: handed_back)
        return handed_back

    try:
        handed_back = asyncio.run(scenario())
    finally:
        filler.close()
        listener.close()
    assert len(handed_back) == 1 and handed_back[0][2] is True, handed_back
    assert "no connection within 0.3 s" in handed_back[0][1]
