"""Reading routing facts from raw request bytes, checked against real protobuf serialization."""

import pytest
from tritonclient.grpc import service_pb2

from gateway import wire


def request(**parameters) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name="add_one", model_version="1", id="req-7")
    for key, value in parameters.items():
        if isinstance(value, bool):
            message.parameters[key].bool_param = value
        elif isinstance(value, int):
            message.parameters[key].int64_param = value
        else:
            message.parameters[key].string_param = value
    tensor = message.inputs.add(name="INPUT0", datatype="FP32", shape=[3])
    tensor.parameters["binary_data_size"].int64_param = 12
    message.raw_input_contents.append(b"\x00" * 12)
    return message


def test_plain_request():
    route = wire.parse_infer_request(request().SerializeToString())
    assert (route.model, route.version, route.request_id) == ("add_one", "1", "req-7")
    assert not route.in_sequence


def test_a_request_after_a_prefix_is_read_in_place():
    data = request(sequence_id=42, sequence_start=True).SerializeToString()
    framed = b"\x00" + len(data).to_bytes(4, "big") + data  # the gRPC message prefix
    assert wire.parse_infer_request(framed, 5) == wire.parse_infer_request(data)
    assert wire.parse_infer_request(framed, 5).sequence_id == 42


def test_sequence_parameters_integer_and_string_ids():
    data = request(sequence_id=42, sequence_start=True, priority=3).SerializeToString()
    route = wire.parse_infer_request(data)
    assert (route.sequence_id, route.sequence_start, route.sequence_end) == (42, True, False)
    route = wire.parse_infer_request(request(sequence_id="cam-3", sequence_end=True).SerializeToString())
    assert (route.sequence_id, route.in_sequence, route.sequence_end) == ("cam-3", True, True)


@pytest.mark.parametrize("data, why", [
    (b"\xff\xff\xff", "truncated varint"),
    (b"\x0a\x05ab", "runs past the end"),
    (b"\x08\x01", "must be length-delimited"),
    (b"\x0b", "unsupported wire type"),
    (b"", "model_name is empty"),
    (b"\x0a\x02\xff\xfe", "not UTF-8"),
])
def test_malformed_bytes_are_rejected_with_a_reason(data, why):
    with pytest.raises(wire.MalformedMessage, match=why):
        wire.parse_infer_request(data)


def test_stream_response_wrapping_round_trips():
    inner = service_pb2.ModelInferResponse(model_name="add_one", id="req-7").SerializeToString()
    wrapped = service_pb2.ModelStreamInferResponse.FromString(wire.stream_response(inner))
    assert (wrapped.infer_response.model_name, wrapped.infer_response.id, wrapped.error_message) == (
        "add_one", "req-7", "")
    assert wire.stream_response_model(wire.stream_response(inner)) == "add_one"
    error = service_pb2.ModelStreamInferResponse.FromString(wire.stream_error("boom ✓"))
    assert error.error_message == "boom ✓" and not error.HasField("infer_response")


def test_model_name_of_small_requests():
    data = service_pb2.ModelReadyRequest(name="running_sum", version="2").SerializeToString()
    assert wire.parse_model_name(data) == "running_sum"
