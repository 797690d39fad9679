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


def test_the_beginning_of_a_large_request_routes_it_or_says_it_needs_more():
    """The front door parses the first piece of a request whose tensors are still in further pieces:
    cut anywhere, the scan gives the full message's answer or MessageIncomplete, never another one."""
    message = request(sequence_id="cam-3", sequence_start=True)
    message.raw_input_contents[0] = bytes(range(256)) * 600  # 150 KB of tensor, the last field
    data = message.SerializeToString()
    whole = wire.parse_infer_request(data)
    routed_from_a_prefix = []
    for cut in range(0, len(data), 97):
        try:
            route = wire.parse_infer_request(memoryview(data)[:cut], 0, len(data))
        except wire.MessageIncomplete:
            continue
        assert route == whole
        routed_from_a_prefix.append(cut)
    # Once everything before the tensor's bytes is at hand, the rest is not needed.
    assert routed_from_a_prefix and min(routed_from_a_prefix) < 400
    # A field after the tensor (valid protobuf, in an unusual order) is not skipped unread.
    extra = service_pb2.ModelInferRequest(id="late").SerializeToString()
    with pytest.raises(wire.MessageIncomplete):
        wire.parse_infer_request(data[:400], 0, len(data) + len(extra))
    assert wire.parse_infer_request(data + extra).request_id == "late"


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


def test_a_stream_error_is_what_triton_sends():
    error = service_pb2.ModelStreamInferResponse.FromString(wire.stream_error("boom ✓"))
    assert error.error_message == "boom ✓" and not error.HasField("infer_response")


def test_a_stream_answer_says_from_its_first_byte_whether_it_is_an_error():
    inner = service_pb2.ModelInferResponse(model_name="add_one", id="r", raw_output_contents=[b"x" * 100_000])
    answer = service_pb2.ModelStreamInferResponse(infer_response=inner).SerializeToString()
    assert not wire.stream_answer_is_error(answer[:1])
    error = service_pb2.ModelStreamInferResponse(error_message="Request for unknown model").SerializeToString()
    assert wire.stream_answer_is_error(error[:1])
    assert wire.stream_error_text(error) == "Request for unknown model"
    assert wire.stream_error_text(answer) == ""


def test_model_name_of_small_requests():
    data = service_pb2.ModelReadyRequest(name="running_sum", version="2").SerializeToString()
    assert wire.parse_model_name(data) == "running_sum"
