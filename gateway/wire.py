"""Just enough of the protobuf wire format to route a request without decoding it.

The gateway forwards request bytes as they came. To pick a pod it needs the model name and, for
stateful models, the sequence id and its start/end flags; these sit near the front of a
`ModelInferRequest`, so a field scan that skips the tensors (one length prefix each) is enough and costs
the same for a 10-byte and a 10-MB request. The scan also rejects bytes that are not a protobuf message,
which the gateway answers with INVALID_ARGUMENT before they reach any pod.
"""

from __future__ import annotations

from typing import NamedTuple

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# ModelInferRequest: model_name = 1, model_version = 2, id = 3, parameters = 4 (map<string, InferParameter>).
# InferParameter: bool_param = 1, int64_param = 2, string_param = 3, double_param = 4, uint64_param = 5.
_SEQUENCE_KEYS = (b"sequence_id", b"sequence_start", b"sequence_end")


class MalformedMessage(ValueError):
    """The bytes are not a valid protobuf message of the expected shape."""


class MessageIncomplete(Exception):
    """A field the scan needs lies beyond the bytes at hand (the message's beginning only)."""


class RequestRoute(NamedTuple):
    """What routing needs from a `ModelInferRequest` (a tuple: it is built for every request)."""

    model: str
    version: str = ""
    request_id: str = ""
    sequence_id: int | str = 0
    sequence_start: bool = False
    sequence_end: bool = False

    @property
    def in_sequence(self) -> bool:
        return self.sequence_id not in (0, "")


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise MalformedMessage("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MalformedMessage("varint longer than 10 bytes")


def iter_fields(data: bytes, start: int = 0, end: int | None = None):
    """Yield (field_number, wire_type, value) of one message level; LENGTH values are (start, end) spans."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        key = data[pos]
        if key < 0x80:  # keys and lengths under 128 are one byte: most of them
            pos += 1
        else:
            key, pos = _varint(data, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise MalformedMessage("field number 0")
        if wire_type == _LENGTH:
            length = data[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            else:
                length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise MalformedMessage("length-delimited field runs past the end of the message")
            value = (pos, pos + length)
            pos += length
        elif wire_type == _VARINT:
            value, pos = _varint(data, pos, end)
        elif wire_type == _FIXED64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire_type == _FIXED32:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise MalformedMessage(f"unsupported wire type {wire_type}")
        if pos > end:
            raise MalformedMessage("fixed-width field runs past the end of the message")
        yield field, wire_type, value


def _text(data: bytes, span: tuple[int, int]) -> str:
    try:
        return str(data[span[0] : span[1]], "utf-8")  # bytes or a memoryview of them
    except UnicodeDecodeError:
        raise MalformedMessage("string field is not UTF-8") from None


def _parameter_value(data: bytes, spans: list[tuple[int, int]]) -> int | str | bool | None:
    """The InferParameter that `spans` (its pieces, in order) make: as protobuf merges them, the member
    set last wins; a double is no sequence id or flag."""
    value = None
    for span in spans:
        for field, wire_type, item in iter_fields(data, *span):
            if field in (1, 2, 5) and wire_type == _VARINT:
                value = item if field != 1 else bool(item)
            elif field == 3 and wire_type == _LENGTH:
                value = _text(data, item)
            elif field == 4 and wire_type == _FIXED64:
                value = None
    return value


def _parameter(data: bytes, span: tuple[int, int]) -> tuple[bytes, int | str | bool | None]:
    # Protobuf accepts a map entry's value before its key, and either of them twice.
    key, values = b"", []
    for field, wire_type, item in iter_fields(data, *span):
        if wire_type != _LENGTH:
            raise MalformedMessage("map entry field is not length-delimited")
        if field == 1:
            key = bytes(data[item[0] : item[1]])
        elif field == 2:
            values.append(item)
    return key, _parameter_value(data, values) if key in _SEQUENCE_KEYS else None


def parse_infer_request(data: bytes, start: int = 0, end: int | None = None) -> RequestRoute:
    """Routing facts of a serialized `ModelInferRequest` (from `start` in `data`: no copy of a large
    request to skip a prefix); MalformedMessage when it is not one.

    `data` may hold only the beginning of the message, which ends at `end`: a request's tensors
    (`raw_input_contents`, the last field) may still be in further pieces. The scan skips them by their
    length, and raises MessageIncomplete only when a field it reads, or any field after them, lies
    beyond `data`.
    """
    model, version, request_id = "", "", ""
    sequence: dict[bytes, int | str | bool | None] = {}
    available = len(data)
    try:
        for field, wire_type, value in iter_fields(data, start, end):
            if field in (1, 2, 3, 4, 5, 6, 7) and wire_type != _LENGTH:
                raise MalformedMessage(f"field {field} of ModelInferRequest must be length-delimited")
            if field in (1, 2, 3, 4) and value[1] > available:
                raise MessageIncomplete
            if field == 1:
                model = _text(data, value)
            elif field == 2:
                version = _text(data, value)
            elif field == 3:
                request_id = _text(data, value)
            elif field == 4:
                key, parameter = _parameter(data, value)
                if key in _SEQUENCE_KEYS:
                    sequence[key] = parameter
    except IndexError:  # the scan reached past `data` before `end`
        raise MessageIncomplete from None
    if not model:
        raise MalformedMessage("model_name is empty")
    sequence_id = sequence.get(b"sequence_id") or 0
    if isinstance(sequence_id, bool):
        raise MalformedMessage("sequence_id must be an integer or a string")
    return RequestRoute(
        model=model,
        version=version,
        request_id=request_id,
        sequence_id=sequence_id,
        sequence_start=bool(sequence.get(b"sequence_start")),
        sequence_end=bool(sequence.get(b"sequence_end")),
    )


def parse_model_name(data: bytes, field_number: int = 1) -> str:
    """The string field `field_number` of a small request (`ModelReadyRequest.name` and the like)."""
    name = ""
    for field, wire_type, value in iter_fields(data):
        if field == field_number:
            if wire_type != _LENGTH:
                raise MalformedMessage(f"field {field_number} must be a string")
            name = _text(data, value)
    return name


def stream_answer_is_error(answer_head) -> bool:
    """Whether a serialized `ModelStreamInferResponse`, from its first bytes, carries `error_message`
    (field 1, serialized first: a successful answer begins with field 2, `infer_response`)."""
    return len(answer_head) > 0 and answer_head[0] == 0x0A


def stream_error_text(data: bytes) -> str:
    """The `error_message` of a serialized `ModelStreamInferResponse` ("" when it has none)."""
    for field, wire_type, value in iter_fields(data):
        if field == 1 and wire_type == _LENGTH:
            return _text(data, value)
    return ""


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def stream_error(message: str) -> bytes:
    """A `ModelStreamInferResponse` carrying only `error_message` (field 1), as Triton sends one."""
    encoded = message.encode("utf-8")
    return b"\x0a" + _encode_varint(len(encoded)) + encoded
