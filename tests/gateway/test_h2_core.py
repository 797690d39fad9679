"""The sans-IO HTTP/2 core (gateway.transport.h2.H2Connection) driven with bytes only, no socket:
python-hyper's h2 is the peer in memory. Flow-control windows, sends queued until a WINDOW_UPDATE or
SETTINGS opens them, a large DATA payload delivered in pieces that are views of the reads, manual
acknowledgement of received bytes, and HPACK both ways."""

from __future__ import annotations

import random

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from gateway.transport.h2 import (DATA, END_STREAM, FLOW_CONTROL_ERROR, WINDOW_UPDATE, ConnectionFailed,
                                  DataReceived, H2Connection, H2Limits, HeadersReceived, StreamReset, encode_headers,
                                  frame, frame_header)

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
           (":authority", "gateway"), ("content-type", "application/grpc"), ("te", "trailers")]
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0")]


def _peer(**settings) -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    peer = h2.connection.H2Connection(config)
    peer.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.get("window", 65_535),
        h2.settings.SettingCodes.MAX_FRAME_SIZE: 16_384})
    peer.initiate_connection()
    return peer


def _exchange(ours: H2Connection, peer: h2.connection.H2Connection) -> tuple[list, list]:
    """Carry bytes both ways until neither side has anything to send; the events each side saw."""
    our_events, peer_events = [], []
    while True:
        to_us, to_peer = peer.data_to_send(), b"".join(ours.data_to_send())
        if not to_us and not to_peer:
            return our_events, peer_events
        if to_us:
            our_events += ours.receive_data(to_us)
        if to_peer:
            peer_events += peer.receive_data(to_peer)


def _server_with_a_request(limits: H2Limits | None = None, manual_flow: bool = False, window: int = 65_535):
    """Our server side and an h2 client that opened stream 1 (headers only, the request body to come)."""
    ours = H2Connection(client=False, limits=limits, manual_flow=manual_flow)
    ours.initiate_connection()
    peer = _peer(window=window)
    _exchange(ours, peer)
    peer.send_headers(1, REQUEST)
    events, _ = _exchange(ours, peer)
    assert [type(e) for e in events] == [HeadersReceived] and events[0].headers == REQUEST
    return ours, peer


def _received(peer_events, stream_id=1) -> bytes:
    return b"".join(e.data for e in peer_events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id)


def test_data_beyond_the_peers_window_waits_and_goes_on_each_window_update():
    ours, peer = _server_with_a_request()
    body = random.Random(1).randbytes(200_000)
    ours.send_headers(1, RESPONSE)
    ours.send_data(1, body)
    ours.send_headers(1, TRAILERS, end_stream=True)  # trailers wait behind the DATA that waits
    _, seen = _exchange(ours, peer)
    assert _received(seen) == body[:65_535]  # the peer's default stream and connection windows
    assert not any(isinstance(e, h2.events.StreamEnded) for e in seen)
    assert ours.streams[1].pending  # the rest is queued on the stream, not lost
    got = bytearray(_received(seen))
    for _ in range(10):
        peer.increment_flow_control_window(50_000)
        peer.increment_flow_control_window(50_000, stream_id=1)
        _, seen = _exchange(ours, peer)
        got += _received(seen)
        if any(isinstance(e, h2.events.StreamEnded) for e in seen):
            break
        assert len(got) < len(body)
    assert bytes(got) == body
    trailers = [e for e in seen if isinstance(e, h2.events.TrailersReceived)]
    assert trailers and trailers[0].headers == TRAILERS


def test_a_larger_initial_window_in_settings_resumes_queued_data():
    ours, peer = _server_with_a_request()
    body = bytes(100_000)
    ours.send_headers(1, RESPONSE)
    ours.send_data(1, body, end_stream=True)
    _, seen = _exchange(ours, peer)
    assert len(_received(seen)) == 65_535
    peer.increment_flow_control_window(1 << 20)  # the connection window; the stream's is still spent
    _, seen = _exchange(ours, peer)
    assert _received(seen) == b""
    peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    _, seen = _exchange(ours, peer)
    assert len(_received(seen)) == 100_000 - 65_535
    assert any(isinstance(e, h2.events.StreamEnded) for e in seen)
    assert 1 not in ours._blocked  # noqa: SLF001 - nothing left waiting


def test_sent_data_is_not_copied_and_respects_the_peers_frame_size():
    ours, peer = _server_with_a_request()
    peer.increment_flow_control_window(1 << 20)
    peer.increment_flow_control_window(1 << 20, stream_id=1)
    _exchange(ours, peer)
    body = bytearray(40_000)
    ours.send_headers(1, RESPONSE)
    ours.send_data(1, body, end_stream=True)
    chunks = ours.data_to_send()
    payloads = [c for c in chunks if isinstance(c, memoryview)]
    assert [len(p) for p in payloads] == [16_384, 16_384, 40_000 - 2 * 16_384]
    assert all(p.obj is body for p in payloads)


def test_a_data_payload_longer_than_a_read_is_delivered_in_pieces_that_are_views_of_the_reads():
    ours, peer = _server_with_a_request(limits=H2Limits(max_frame_size=1 << 18))
    payload = random.Random(3).randbytes(150_000)
    data = frame(DATA, END_STREAM, 1, payload)  # one DATA frame of 150 KB (we announced 256 KiB frames)
    reads = [data[:4], data[4:50_000], data[50_000:120_000], data[120_000:]]
    pieces = []
    for read in reads:
        pieces += ours.receive_data(read)
    assert all(type(e) is DataReceived for e in pieces)
    assert [e.data.obj for e in pieces] == reads[1:]  # each piece a view of its read: no copy
    assert b"".join(e.data for e in pieces) == payload
    assert [e.end_stream for e in pieces] == [False, False, True]


@pytest.mark.parametrize("seed", range(3))
def test_frames_cut_anywhere_give_the_same_events(seed):
    rng = random.Random(seed)
    peer = _peer(window=1 << 20)
    peer.send_headers(1, REQUEST)
    peer.send_data(1, rng.randbytes(16_000))
    peer.send_data(1, rng.randbytes(14_000), end_stream=True)
    peer.send_headers(3, REQUEST, end_stream=True)
    data = peer.data_to_send()

    def events(cuts):
        ours = H2Connection(client=False)
        ours.initiate_connection()
        found = []
        for start, end in zip([0, *cuts], [*cuts, len(data)]):
            for event in ours.receive_data(data[start:end]):
                if type(event) is DataReceived:
                    found.append(("data", event.stream_id, bytes(event.data), event.end_stream))
                elif type(event) is HeadersReceived:
                    found.append(("headers", event.stream_id, event.headers, event.end_stream))
        merged = []
        for event in found:  # pieces of one DATA payload: joined
            if event[0] == "data" and merged and merged[-1][0] == "data" and merged[-1][1] == event[1]:
                merged[-1] = ("data", event[1], merged[-1][2] + event[2], event[3])
            else:
                merged.append(event)
        return merged

    whole = events([])
    assert [e[0] for e in whole] == ["headers", "data", "headers"]
    assert events(sorted(rng.sample(range(1, len(data)), 30))) == whole
    assert events(list(range(1, 200))) == whole


def _window_updates(chunks) -> list[tuple[int, int]]:
    data, found, position = b"".join(chunks), [], 0
    while position + 9 <= len(data):
        size = int.from_bytes(data[position:position + 3], "big")
        if data[position + 3] == WINDOW_UPDATE:
            found.append((int.from_bytes(data[position + 5:position + 9], "big"),
                          int.from_bytes(data[position + 9:position + 13], "big")))
        position += 9 + size
    return found


def test_received_bytes_are_granted_back_at_once_without_manual_flow_control():
    limits = H2Limits(initial_window_size=1 << 20, connection_window_size=1 << 20, grant_step=1 << 16)
    ours, _ = _server_with_a_request(limits=limits)
    ours.receive_data(frame(DATA, 0, 1, bytes(70_000)))
    assert _window_updates(ours.data_to_send()) == [(0, 70_000), (1, 70_000)]


def test_with_manual_flow_control_nothing_is_granted_until_acknowledged_and_the_window_is_enforced():
    limits = H2Limits(initial_window_size=1 << 17, connection_window_size=1 << 20, grant_step=1 << 16)
    ours, _ = _server_with_a_request(limits=limits, manual_flow=True)
    ours.receive_data(frame(DATA, 0, 1, bytes(100_000)))
    assert _window_updates(ours.data_to_send()) == []
    assert ours.streams[1].unacknowledged == 100_000
    ours.acknowledge_received_data(40_000, 1)
    assert _window_updates(ours.data_to_send()) == []  # less than a grant step
    ours.acknowledge_received_data(30_000, 1)
    assert _window_updates(ours.data_to_send()) == [(0, 70_000), (1, 70_000)]
    assert ours.streams[1].unacknowledged == 30_000
    # The peer may now send 131,072 - 100,000 + 70,000 bytes on the stream; one more is its error.
    allowed = (1 << 17) - 100_000 + 70_000
    assert [type(e) for e in ours.receive_data(frame(DATA, 0, 1, bytes(allowed)))] == [DataReceived]
    events = ours.receive_data(frame(DATA, 0, 1, b"x"))
    assert [type(e) for e in events] == [StreamReset] and events[0].error_code == FLOW_CONTROL_ERROR


def test_data_beyond_the_connection_window_ends_the_connection():
    limits = H2Limits(initial_window_size=1 << 20, connection_window_size=65_535, grant_step=1 << 15)
    ours, _ = _server_with_a_request(limits=limits, manual_flow=True)
    events = ours.receive_data(frame(DATA, 0, 1, bytes(65_535)) + frame_header(DATA, 0, 1, 1) + b"x")
    assert [type(e) for e in events] == [DataReceived, ConnectionFailed]
    assert events[1].error_code == FLOW_CONTROL_ERROR


@pytest.mark.parametrize("headers", [
    REQUEST + [("x-tenant", "cam-" + "7" * 300)],
    [("grpc-status", "3"), ("grpc-message", "malformed%20ModelInferRequest"), ("trace-bin", "AAEC")],
])
def test_hpack_round_trips_with_h2_both_ways(headers):
    assert hpack.Decoder().decode(encode_headers(headers), raw=False) == headers
    # An h2 client, which indexes what it sends: the second block is all table references.
    ours, peer = H2Connection(client=False), _peer()
    ours.initiate_connection()
    _exchange(ours, peer)
    request = REQUEST + headers[len(REQUEST):] if headers[:len(REQUEST)] == REQUEST else REQUEST + headers
    peer.send_headers(1, request, end_stream=True)
    peer.send_headers(3, request, end_stream=True)
    events, _ = _exchange(ours, peer)
    assert [e.headers for e in events if type(e) is HeadersReceived] == [request, request]
    ours.send_headers(1, RESPONSE)
    ours.send_headers(1, headers if headers[0][0] == "grpc-status" else TRAILERS, end_stream=True)
    _, seen = _exchange(ours, peer)
    assert [e.headers for e in seen if isinstance(e, h2.events.ResponseReceived)] == [RESPONSE]
