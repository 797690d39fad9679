"""HTTP/2 (RFC 9113) without I/O: frames, settings, error codes and HPACK for the gateway's connections.

Headers: blocks the gateway sends use literals without indexing, so they never touch the peer's
dynamic table and the same headers are always the same bytes (cached); blocks it receives are decoded
by hpack, and a block that left the table unchanged is cached until the table changes.
"""

from __future__ import annotations

import struct
from collections import deque

import hpack
import hpack.table

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
RECEIVE_WINDOW = 1 << 24
RECEIVE_MAX_FRAME = 1 << 20
# Received bytes are granted back once this many have arrived, so most calls send no WINDOW_UPDATE.
GRANT_STEP = 1 << 20
MAX_STREAM_ID = (1 << 31) - 1


class ProtocolError(Exception):
    """The peer broke HTTP/2; the connection ends with GOAWAY."""


# A frame header: 24-bit length (as 16 + 8 bits), type, flags, stream id (RFC 9113 4.1).
_FRAME_HEADER = struct.Struct(">HBBBI")
# A turn's output larger than this goes to the socket as a list of chunks; smaller, as one joined copy.
WRITELINES_FROM = 1 << 14


def frame_header(kind: int, flags: int, stream_id: int, size: int) -> bytes:
    return _FRAME_HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id)


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return frame_header(kind, flags, stream_id, len(payload)) + payload


def settings_payload(values: dict[int, int]) -> bytes:
    return b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in values.items())


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def unpad(flags: int, payload: bytes) -> bytes:
    if flags & PADDED:
        if not payload or payload[0] >= len(payload):
            raise ProtocolError("padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]
    return payload


# ---- HPACK -----------------------------------------------------------------------------------------

_STATIC_NAMES: dict[str, int] = {}
for _index, (_name, _value) in enumerate(hpack.table.HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name.decode(), _index)


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) in a `prefix_bits` prefix, OR-ed into `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return _integer(len(data), 7) + data


def _field(name: str, value: str) -> bytes:
    """A literal header field without indexing (RFC 7541 6.2.2), the name from the static table if there."""
    index = _STATIC_NAMES.get(name)
    if index is not None:
        return _integer(index, 4) + _string(value)
    return b"\x00" + _string(name) + _string(value)


_encoded: dict[tuple, bytes] = {}


def encode_headers(headers) -> bytes:
    """A header block that leaves the peer's dynamic table alone, so the same headers always give the
    same bytes: gRPC answers repeat theirs, and the blocks are cached (a bounded cache)."""
    key = tuple(headers)
    block = _encoded.get(key)
    if block is None:
        block = b"".join([_field(name, value) for name, value in key])
        if len(_encoded) >= 1024:
            _encoded.clear()
        _encoded[key] = block
    return block


class _TrackedTable(hpack.table.HeaderTable):
    """hpack's dynamic table, counting its changes."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name, value) -> None:
        self.changes += 1
        super().add(name, value)

    def _set_maxsize(self, newmax: int) -> None:
        self.changes += 1
        hpack.table.HeaderTable.maxsize.fset(self, newmax)

    maxsize = property(hpack.table.HeaderTable.maxsize.fget, _set_maxsize)


class HeaderDecoder:
    """hpack's decoder with a cache: a block that left the dynamic table as it was decodes to the same
    headers for as long as the table stays unchanged, which in steady gRPC traffic is every block."""

    def __init__(self) -> None:
        self._decoder = hpack.Decoder()
        self._decoder.max_allowed_table_size = 1 << 16
        self._table = self._decoder.header_table = _TrackedTable()
        self._cache: dict[bytes, tuple[int, list]] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        changes = self._table.changes
        hit = self._cache.get(block)
        if hit is not None and hit[0] == changes:
            return hit[1]
        headers = self._decoder.decode(block, raw=False)
        if self._table.changes == changes:
            if len(self._cache) >= 64:
                self._cache.clear()
            self._cache[block] = (changes, headers)
        return headers


