"""Fuzzing the gateway's protobuf field scan (gateway/wire.py) against protobuf's own parser.

The contract: on any bytes, `parse_infer_request` returns a route or raises MalformedMessage (a
ValueError, which the front door answers with INVALID_ARGUMENT); nothing else escapes. Where it returns
a route and protobuf parses the same bytes, the route is what Triton will read from them: the model,
version, id and sequence parameters protobuf sees, so the gateway never routes one sequence while the
pod serves another.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings, strategies as st
from tritonclient.grpc import service_pb2

from gateway import wire
from tests.fuzz.profiles import examples

SEQUENCE_KEYS = ("sequence_id", "sequence_start", "sequence_end")
UINT64 = (1 << 64) - 1

text = st.text(max_size=12)
names = st.text(min_size=1, max_size=12)
# What a client may put in a parameter: each of InferParameter's oneof members.
parameter_values = st.one_of(
    st.booleans().map(lambda v: ("bool_param", v)),
    st.integers(-(1 << 63), (1 << 63) - 1).map(lambda v: ("int64_param", v)),
    st.integers(0, UINT64).map(lambda v: ("uint64_param", v)),
    text.map(lambda v: ("string_param", v)),
    st.floats(allow_nan=False).map(lambda v: ("double_param", v)),
)
parameters = st.dictionaries(st.sampled_from(SEQUENCE_KEYS + ("priority", "timeout")), parameter_values, max_size=4)


@st.composite
def infer_requests(draw) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name=draw(names), model_version=draw(text), id=draw(text))
    for key, (member, value) in draw(parameters).items():
        setattr(message.parameters[key], member, value)
    for index in range(draw(st.integers(0, 2))):
        data = draw(st.binary(max_size=64))
        tensor = message.inputs.add(name=f"INPUT{index}", datatype="UINT8", shape=[len(data)])
        tensor.parameters["binary_data_size"].int64_param = len(data)
        message.raw_input_contents.append(data)
    return message


def expected_route(message: service_pb2.ModelInferRequest) -> wire.RequestRoute:
    """What Triton reads from a parsed request, in the scan's terms: integers as their unsigned 64-bit
    value (Triton's correlation ids are uint64), flags true when set to anything but false or zero."""

    def value(key: str):
        if key not in message.parameters:
            return None
        parameter = message.parameters[key]
        member = parameter.WhichOneof("parameter_choice")
        if member is None or member == "double_param":
            return None
        found = getattr(parameter, member)
        return found & UINT64 if member in ("int64_param", "uint64_param") else found

    sequence_id = value("sequence_id") or 0
    return wire.RequestRoute(model=message.model_name, version=message.model_version, request_id=message.id,
                             sequence_id=sequence_id, sequence_start=bool(value("sequence_start")),
                             sequence_end=bool(value("sequence_end")))


def protobuf_parse(data: bytes) -> service_pb2.ModelInferRequest | None:
    try:
        return service_pb2.ModelInferRequest.FromString(data)
    except DecodeError:
        return None


def check_against_protobuf(data: bytes) -> wire.RequestRoute | None:
    """The scan's answer on `data`, checked: a route protobuf agrees with, or MalformedMessage (None).
    A sequence_id of `true` is refused, though protobuf reads it: no pod can serve it as a sequence."""
    message = protobuf_parse(data)
    reference = None if message is None else expected_route(message)
    try:
        route = wire.parse_infer_request(data)
    except wire.MalformedMessage:
        return None
    if reference is not None:
        assert not isinstance(reference.sequence_id, bool), f"the scan routed a boolean sequence_id: {route}"
        assert route == reference, data
    return route


@st.composite
def mutated(draw) -> bytes:
    """A valid request's bytes changed the way a broken or hostile client changes them."""
    data = bytearray(draw(infer_requests()).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "cut", "insert", "delete", "append")))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "append":  # protobuf merges concatenated messages: later fields win
            data += draw(infer_requests()).SerializeToString()
    return bytes(data)


def varint(value: int) -> bytes:
    return service_pb2.InferParameter(uint64_param=value).SerializeToString()[1:]


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@st.composite
def hand_built_parameters(draw) -> bytes:
    """Map entries protobuf accepts but its own encoder never writes: the value before the key, a key
    or a value twice, several members of the oneof in one value (the last one wins)."""
    members = [service_pb2.InferParameter(**{member: value}).SerializeToString()
               for member, value in draw(st.lists(parameter_values, min_size=1, max_size=3))]
    parts = [field(1, draw(st.sampled_from(SEQUENCE_KEYS)).encode()) for _ in range(draw(st.integers(1, 2)))]
    parts += [field(2, b"".join(members))]
    return field(4, b"".join(draw(st.permutations(parts))))


@settings(max_examples=examples(300, 5_000))
@given(infer_requests(), st.lists(hand_built_parameters(), max_size=3))
def test_hand_built_parameter_entries_route_as_protobuf_reads_them(message, entries):
    check_against_protobuf(message.SerializeToString() + b"".join(entries))


@settings(max_examples=examples(300, 5_000))
@given(infer_requests())
def test_valid_requests_route_as_protobuf_reads_them(message):
    data = message.SerializeToString()
    route = check_against_protobuf(data)
    assert (route is None) == (expected_route(message).sequence_id is True)
    if route is not None:  # the front door parses requests in place, after the 5-byte gRPC prefix
        assert wire.parse_infer_request(b"\x00" + len(data).to_bytes(4, "big") + data, 5) == route


@settings(max_examples=examples(50, 1_000))
@given(infer_requests())
def test_a_sequence_id_of_true_is_refused(message):
    message.parameters["sequence_id"].bool_param = True
    with pytest.raises(wire.MalformedMessage, match="sequence_id"):
        wire.parse_infer_request(message.SerializeToString())


@settings(max_examples=examples(400, 8_000))
@given(mutated())
def test_mutated_requests_route_as_protobuf_reads_them_or_are_refused(data):
    check_against_protobuf(data)


@settings(max_examples=examples(300, 8_000))
@given(st.binary(max_size=256))
def test_arbitrary_bytes_route_as_protobuf_reads_them_or_are_refused(data):
    check_against_protobuf(data)


@settings(max_examples=examples(200, 3_000))
@given(mutated(), st.data())
def test_any_prefix_gives_the_whole_messages_answer_or_asks_for_more(data, draw):
    """The front door routes a large request from its first piece: a prefix gives the whole message's
    answer, MessageIncomplete, or (for bytes that are broken already) MalformedMessage."""
    cut = draw.draw(st.integers(0, len(data)))
    try:
        whole = wire.parse_infer_request(data)
    except wire.MalformedMessage:
        whole = None
    try:
        route = wire.parse_infer_request(memoryview(data)[:cut], 0, len(data))
    except wire.MessageIncomplete:
        return
    except wire.MalformedMessage:
        assert whole is None, "a prefix of a valid message was refused"
        return
    assert route == whole


@settings(max_examples=examples(200, 3_000))
@given(st.binary(max_size=128))
def test_small_requests_and_stream_answers_are_read_or_refused(data):
    for parse in (wire.parse_model_name, wire.stream_error_text):
        try:
            assert isinstance(parse(data), str)
        except wire.MalformedMessage:
            pass
