"""The front door's HTTP/2 pieces: HPACK against the hpack package's own encoder and decoder, and
frames reassembled from reads cut anywhere."""

from __future__ import annotations

import asyncio
import random

import hpack
import pytest

from gateway.transport.connection import Connection
from gateway.transport.h2 import (DATA, END_HEADERS, END_STREAM, HEADERS, PING, PREFACE, RST_STREAM, SETTINGS,
                                  HeaderDecoder, _integer, encode_headers, frame)

GRPC_REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
                (":authority", "127.0.0.1:8001"), ("content-type", "application/grpc"), ("te", "trailers"),
                ("grpc-timeout", "59999m"), ("x-tenant", "cam-" + "7" * 300)]


@pytest.mark.parametrize("headers", [
    GRPC_REQUEST,
    [(":status", "200"), ("content-type", "application/grpc")],
    [("grpc-status", "3"), ("grpc-message", "malformed%20ModelInferRequest"), ("trace-bin", "AAEC")],
    [("x-" + "k" * 200, "v" * 5000)],
])
def test_encoded_blocks_decode_to_the_same_headers_with_hpack(headers):
    block = encode_headers(headers)
    assert hpack.Decoder().decode(block, raw=False) == headers
    assert encode_headers(list(headers)) is block  # cached: the same headers, the same bytes


def test_a_table_size_update_prefix_is_accepted():
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 4096
    block = _integer(0, 5, 0x20) + encode_headers([(":status", "200")])
    assert decoder.decode(block, raw=False) == [(":status", "200")]
    assert decoder.header_table_size == 0


@pytest.mark.parametrize("table_size", [4096, 256])
def test_the_decode_cache_agrees_with_a_plain_decoder_while_the_table_churns(table_size):
    # A peer's encoder that indexes: repeated header lists become all-indexed blocks (cache hits),
    # new values change the table (and must invalidate what was cached), a small table evicts.
    rng = random.Random(table_size)
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size
    ours, plain = HeaderDecoder(), hpack.Decoder()
    hits = 0
    for _ in range(2000):
        headers = [(":status", "200"), ("content-type", "application/grpc"),
                   ("grpc-status", str(rng.choice([0, 0, 0, 3, 14]))), ("x-id", str(rng.randrange(12)))]
        block = encoder.encode(headers)
        cached = block in ours._cache  # noqa: SLF001 - the property under test
        decoded = ours.decode(block)
        hits += cached
        assert decoded == plain.decode(block, raw=False) == headers
    assert hits > 100


class RecordingConnection(Connection):
    """A server-side Connection that records the streams' events instead of answering them."""

    def __init__(self):
        super().__init__(client=False)
        self.events: list = []

    def on_headers(self, stream_id, headers, end_stream):
        self.events.append(("headers", stream_id, headers, end_stream))

    def on_data(self, stream_id, data, end_stream):
        self.events.append(("data", stream_id, bytes(data), end_stream))

    def on_reset(self, stream_id, code):
        self.events.append(("reset", stream_id, code))


class DiscardingTransport:
    def write(self, data):
        pass

    def writelines(self, chunks):
        pass

    def close(self):
        pass


def _client_bytes(payload: bytes) -> bytes:
    headers = encode_headers(GRPC_REQUEST)
    return (PREFACE + frame(SETTINGS, 0, 0)
            + frame(HEADERS, END_HEADERS, 1, headers)
            + frame(DATA, 0, 1, payload[:70_000]) + frame(DATA, END_STREAM, 1, payload[70_000:])
            + frame(HEADERS, END_HEADERS | END_STREAM, 3, headers)
            + frame(RST_STREAM, 0, 3, (8).to_bytes(4, "big")))


def _events_after_reads(data: bytes, cuts: list[int]) -> list:
    connection = RecordingConnection()
    connection.connection_made(DiscardingTransport())
    for start, end in zip([0, *cuts], [*cuts, len(data)]):
        connection.data_received(data[start:end])
    merged: list = []
    for event in connection.events:  # DATA of one stream may arrive as several pieces: join them
        if event[0] == "data" and merged and merged[-1][0] == "data" and merged[-1][1] == event[1]:
            merged[-1] = ("data", event[1], merged[-1][2] + event[2], event[3])
        else:
            merged.append(event)
    return merged


@pytest.mark.parametrize("seed", range(6))
def test_frames_cut_anywhere_across_reads_arrive_whole_and_in_order(seed):
    rng = random.Random(seed)
    payload = rng.randbytes(150_000)
    data = _client_bytes(payload)
    expected = _events_after_reads(data, [])
    assert [e[0] for e in expected] == ["headers", "data", "headers", "reset"]
    assert expected[1][2] == payload and expected[1][3] is True
    # Reads that end inside the preface, a frame header, a header block and a DATA payload.
    cuts = sorted(rng.sample(range(1, len(data)), 40) + [5, len(PREFACE) + 4, len(PREFACE) + 9 + 3])
    assert _events_after_reads(data, cuts) == expected
    one_byte_at_a_time = list(range(1, len(PREFACE) + 200))
    assert _events_after_reads(data, one_byte_at_a_time) == expected


def test_a_data_payload_longer_than_a_read_is_handed_on_in_pieces_of_the_reads_themselves():
    payload = random.Random(7).randbytes(150_000)
    data = PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, encode_headers(GRPC_REQUEST)) \
        + frame(DATA, END_STREAM, 1, payload)
    # Reads cut inside the DATA frame's header, then twice inside its payload.
    header_at = len(data) - len(payload) - 9
    reads = [data[:header_at + 4], data[header_at + 4:header_at + 60_000], data[header_at + 60_000:-1000],
             data[-1000:]]
    connection = RecordingConnection()
    connection.connection_made(DiscardingTransport())
    pieces = []
    original = connection.on_data
    connection.on_data = lambda stream_id, piece, end: (pieces.append(piece), original(stream_id, piece, end))
    for read in reads:
        connection.data_received(read)
    assert [len(p) for p in pieces] == [60_000 - 9, len(reads[2]), 1000]
    # Each piece is a view of the read it came in: the payload was not copied on the way.
    assert [p.obj for p in pieces] == reads[1:]
    assert b"".join(pieces) == payload
    assert [e[3] for e in connection.events if e[0] == "data"] == [False, False, True]


class CountingTransport(DiscardingTransport):
    def __init__(self):
        self.writes: list[bytes] = []

    def write(self, data):
        self.writes.append(bytes(data))

    def writelines(self, chunks):
        self.writes.append(b"".join(chunks))


def test_what_a_turn_of_the_event_loop_sends_leaves_in_one_write_without_a_flush():
    async def scenario():
        connection = RecordingConnection()
        transport = CountingTransport()
        connection.connection_made(transport)
        connection.data_received(_client_bytes(bytes(100)))  # streams 1 (complete) and 3 (reset)
        for _ in range(3):
            connection.send_headers(1, [(":status", "200")], False)
        connection.send_data(1, b"answer", False)
        connection.send_headers(1, [("grpc-status", "0")], True)
        connection.ping(b"12345678")
        assert transport.writes == []  # nothing yet: the write is scheduled for the end of this turn
        turned = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(turned.set_result, None)  # runs after the scheduled write
        await turned
        return transport.writes

    writes = asyncio.run(scenario())
    assert len(writes) == 1
    assert writes[0].count(b"answer") == 1 and writes[0].endswith(frame(PING, 0, 0, b"12345678"))
