"""gRPC on HTTP/2: the length-prefixed messages of a stream, status trailers and deadlines.

A gRPC message on a stream is a 5-byte prefix (a compressed flag and a 32-bit length) and the message
bytes, cut into DATA frames anywhere. `MessageReader` puts the messages of one stream back together
from the DATA pieces as they arrive, without copying them, and refuses a message whose prefix
announces more than the limit before any of its bytes are held. The rest are the small pieces every
call needs: the prefix of a message to send, a status as trailers and back, grpc-timeout, and the
decoding of a compressed message (only to read it: what is forwarded stays the client's bytes).
"""

from __future__ import annotations

import zlib
from urllib.parse import quote, unquote

import grpc

PREFIX_SIZE = 5
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# zlib window bits of the message encodings gRPC defines: gzip (RFC 1952) and deflate (zlib, RFC 1950).
_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPTED_ENCODINGS = "identity,deflate,gzip"


class MessageTooLarge(Exception):
    """A message's prefix announced more bytes than the limit."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"a message of {size} bytes is larger than the gateway's limit of {limit} bytes")
        self.size = size


class BadMessage(Exception):
    """Bytes that are not a gRPC message (a bad prefix, or a compressed message that does not decode)."""


class Message:
    """One complete message: its compressed flag and its bytes, as the pieces they arrived in."""

    __slots__ = ("compressed", "pieces", "size")

    def __init__(self, compressed: bool, pieces: list, size: int):
        self.compressed = compressed
        self.pieces = pieces  # views of the reads, prefix excluded
        self.size = size

    def framed(self) -> list:
        """The message as it goes on the wire again: its prefix, then its pieces."""
        return [prefix(self.size, self.compressed), *self.pieces]

    def first(self, at_least: int = 0):
        """The first piece, joined with the next ones when it is shorter than `at_least` bytes."""
        if self.pieces and len(self.pieces[0]) >= min(at_least, self.size):
            return self.pieces[0]
        return self.joined()

    def joined(self) -> bytes:
        if len(self.pieces) == 1:
            return self.pieces[0]
        self.pieces = [b"".join(self.pieces)]
        return self.pieces[0]


class MessageReader:
    """The messages of one stream, from its DATA pieces; at most `max_bytes` per message."""

    __slots__ = ("max_bytes", "_head", "_compressed", "_left", "_size", "_pieces")

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._head = bytearray()
        self._compressed = False
        self._left = -1  # bytes of the current message still to come; -1: reading a prefix
        self._size = 0
        self._pieces: list = []

    @property
    def partial(self) -> bool:
        """Part of a message (or of its prefix) has arrived, the rest not yet."""
        return bool(self._head) or self._left >= 0

    def feed(self, data) -> list[Message]:
        """The messages `data` completes; raises MessageTooLarge from a prefix, BadMessage."""
        done: list[Message] = []
        position, size = 0, len(data)
        while position < size:
            if self._left < 0:
                take = min(PREFIX_SIZE - len(self._head), size - position)
                self._head += data[position : position + take]
                position += take
                if len(self._head) < PREFIX_SIZE:
                    break
                self._start(done)
                continue
            take = min(self._left, size - position)
            self._pieces.append(data[position : position + take] if take < size or position else data)
            self._left -= take
            position += take
            if not self._left:
                self._complete(done)
        return done

    def _start(self, done: list[Message]) -> None:
        flag, size = self._head[0], int.from_bytes(self._head[1:5], "big")
        self._head.clear()
        if flag > 1:
            raise BadMessage(f"the message prefix has compressed flag {flag} (only 0 and 1 exist)")
        if size > self.max_bytes:
            raise MessageTooLarge(size, self.max_bytes)
        self._compressed, self._size, self._left = bool(flag), size, size
        if not size:
            self._complete(done)

    def _complete(self, done: list[Message]) -> None:
        done.append(Message(self._compressed, self._pieces, self._size))
        self._pieces = []
        self._left = -1


def prefix(size: int, compressed: bool = False) -> bytes:
    return (b"\x01" if compressed else b"\x00") + size.to_bytes(4, "big")


def decompress(message: Message, encoding: str, max_bytes: int) -> bytes:
    """The bytes of a compressed message, to read it; BadMessage for an unknown encoding or bad data,
    MessageTooLarge when it would decode to more than `max_bytes`."""
    wbits = _ENCODINGS.get(encoding)
    if wbits is None:
        raise BadMessage(f"message encoding '{encoding}' is not supported (the gateway reads {ACCEPTED_ENCODINGS})")
    decoder = zlib.decompressobj(wbits)
    try:
        data = decoder.decompress(message.joined(), max_bytes + 1)
    except zlib.error as exc:
        raise BadMessage(f"the {encoding} message does not decode: {exc}") from None
    if len(data) > max_bytes:
        raise MessageTooLarge(len(data), max_bytes)
    return data


def header(headers, name: str, default: str = "") -> str:
    for key, value in headers:
        if key == name:
            return value
    return default


def error_headers(code: grpc.StatusCode, message: str, trailers_only: bool = True) -> list[tuple[str, str]]:
    """A gRPC status as trailers; with the response headers in front for a trailers-only answer."""
    status = [("grpc-status", str(code.value[0])), ("grpc-message", quote(message, safe=" "))]
    return [(":status", "200"), ("content-type", "application/grpc"), *status] if trailers_only else status


def ok_headers() -> list[tuple[str, str]]:
    return [(":status", "200"), ("content-type", "application/grpc")]


def status_of(headers) -> grpc.StatusCode:
    value = header(headers, "grpc-status", "")
    return _CODES.get(int(value), grpc.StatusCode.UNKNOWN) if value.isdigit() else grpc.StatusCode.UNKNOWN


def message_of(headers) -> str:
    return unquote(header(headers, "grpc-message"))


def parse_timeout(value: str) -> float | None:
    """A grpc-timeout header ("100m", "5S") in seconds; None when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    if unit is None or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * unit


def format_timeout(seconds: float) -> str:
    return f"{max(int(seconds * 1e6), 1)}u"
