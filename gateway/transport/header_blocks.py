"""Header blocks: HPACK both ways, cached, and what makes a header list malformed (RFC 9113 8.1-8.3).

Blocks the gateway sends use literals without indexing, so they never touch the peer's dynamic table
and the same headers are always the same bytes (cached); blocks it receives are decoded by hpack, and
a block that left the table unchanged is cached until the table changes, with what the checks found.
"""

from __future__ import annotations

import hpack
import hpack.table

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

    def __init__(self, max_header_list_size: int = 1 << 16) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._decoder.max_allowed_table_size = 1 << 16
        self._table = self._decoder.header_table = _TrackedTable()
        # block -> (the table's changes when decoded, headers, {check: what it found wrong, or None})
        self._cache: dict[bytes, tuple[int, list, dict]] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        return self._entry(block)[1]

    def decode_checked(self, block: bytes, check) -> tuple[list[tuple[str, str]], str | None]:
        """The headers of `block` and what `check(headers)` finds wrong with them (cached with them)."""
        _, headers, problems = self._entry(block)
        try:
            return headers, problems[check]
        except KeyError:
            problem = problems[check] = check(headers)
            return headers, problem

    def _entry(self, block: bytes) -> tuple[int, list, dict]:
        changes = self._table.changes
        hit = self._cache.get(block)
        if hit is not None and hit[0] == changes:
            return hit
        entry = (changes, self._decoder.decode(block, raw=False), {})
        if self._table.changes == changes:
            if len(self._cache) >= 64:
                self._cache.clear()
            self._cache[block] = entry
        return entry


# ---- HTTP/2 message rules (RFC 9113 8.1-8.3) ---------------------------------------------------------

_REQUEST_PSEUDO = frozenset((":method", ":scheme", ":authority", ":path", ":protocol"))
_CONNECTION_SPECIFIC = frozenset(("connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade"))


def _field_problem(name: str, value: str) -> str | None:
    if not name or name != name.lower():
        return f"field name {name!r} is empty or not lower case"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific field {name}"
    if name == "te" and value != "trailers":
        return f"te: {value!r} (only 'trailers' is allowed)"
    if "\0" in value or "\r" in value or "\n" in value:
        return f"field {name} has NUL, CR or LF in its value"
    return None


def request_problem(headers: list[tuple[str, str]]) -> str | None:
    """What makes a request's header list malformed (a stream error), or None."""
    seen: set[str] = set()
    regular = False
    for name, value in headers:
        if name[:1] == ":":
            if regular:
                return f"pseudo-header {name} after regular fields"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name} is not one of a request"
            if name in seen:
                return f"pseudo-header {name} twice"
            seen.add(name)
            if name == ":path" and not value:
                return "an empty :path"
        else:
            regular = True
            problem = _field_problem(name, value)
            if problem:
                return problem
    connect = ":method" in seen and dict(headers)[":method"] == "CONNECT"
    if not seen >= {":method", ":scheme", ":path"} and not connect:
        return f"missing {', '.join(sorted({':method', ':scheme', ':path'} - seen))}"
    return None


def trailers_problem(headers: list[tuple[str, str]]) -> str | None:
    """What makes trailers malformed (a stream error), or None."""
    for name, value in headers:
        if name[:1] == ":":
            return f"pseudo-header {name} in trailers"
        problem = _field_problem(name, value)
        if problem:
            return problem
    return None
