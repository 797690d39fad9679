"""The front door's HPACK pieces against the hpack package's own encoder and decoder."""

from __future__ import annotations

import random

import hpack
import pytest

from gateway.http2 import HeaderDecoder, _integer, encode_headers

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
