"""Every call forwarded as HTTP/2 frames, against three real Triton servers. A raw HTTP/2 client (the gateway's own frame code, as a client) sends
requests cut into DATA frames at awkward places."""

from __future__ import annotations

import asyncio
import urllib.parse

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway.transport.connection import Connection
from gateway.transport.messages import format_timeout, parse_timeout
from tests.gateway.helpers import GatewayProcess, add_one_inputs, served_counts
from tests.gateway.polling import served_since

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(fleet3, tmp_path_factory):
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with GatewayProcess([s.grpc_url for s in fleet3], log) as process:
        yield process


def test_requests_spread_and_answer_correctly(gateway, fleet3):
    before = served_counts(fleet3, "add_one")
    client = grpcclient.InferenceServerClient(gateway.url)
    for value in range(60):
        result = client.infer("add_one", add_one_inputs([value, -value]))
        assert result.as_numpy("OUTPUT0").tolist() == [value + 1, -value + 1]
    client.close()
    deltas = served_since(fleet3, "add_one", before, 60)
    assert sum(deltas) == 60 and min(deltas) >= 10, deltas


def test_tensors_larger_than_every_flow_control_window_cross_intact(gateway):
    # 24 MB each way: more than the gateway's 16 MiB receive window and the client's 64 KB one.
    data = np.arange(6 * 1024 * 1024, dtype=np.float32)
    client = grpcclient.InferenceServerClient(gateway.url)
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer("add_one", [tensor], client_timeout=60)
    assert np.array_equal(result.as_numpy("OUTPUT0"), data + 1)
    client.close()


def test_hundreds_of_concurrent_calls_on_one_channel_each_get_their_own_answer(gateway):

    async def run():
        async with aioclient.InferenceServerClient(gateway.url) as client:
            async def one(value: int):
                tensor = aioclient.InferInput("INPUT0", [2], "FP32")
                tensor.set_data_from_numpy(np.array([value, 2 * value], dtype=np.float32))
                result = await client.infer("add_one", [tensor], request_id=str(value))
                return value, result.get_response().id, result.as_numpy("OUTPUT0").tolist()

            return await asyncio.gather(*(one(v) for v in range(300)))

    for value, request_id, output in asyncio.run(run()):
        assert request_id == str(value) and output == [value + 1, 2 * value + 1]


def test_a_deadline_ends_only_that_call(gateway):
    """A call whose deadline passes while the pod works on it (2 s asked, 0.3 s allowed) ends with
    DEADLINE_EXCEEDED; the next call on the same client is answered. That a cancel reaches the pod is
    in test_gateway_pass_through.py, where a model watches for it."""
    client = grpcclient.InferenceServerClient(gateway.url)
    tensor = grpcclient.InferInput("INPUT0", [3], "FP32")
    tensor.set_data_from_numpy(np.ones(3, dtype=np.float32))
    delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([2000], dtype=np.int32))
    with pytest.raises(InferenceServerException) as late:
        client.infer("slow", [tensor, delay], client_timeout=0.3)
    assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    result = client.infer("add_one", add_one_inputs())
    assert result.as_numpy("OUTPUT0").tolist() == [2.0, 3.0, 4.0]
    client.close()


def test_compressed_requests_are_served(gateway):
    # The front door decodes a compressed message only to read its model, and forwards it as it came.
    client = grpcclient.InferenceServerClient(gateway.url)
    result = client.infer("add_one", add_one_inputs([5.0]), compression_algorithm="gzip")
    assert result.as_numpy("OUTPUT0").tolist() == [6.0]
    client.close()


def test_streams_and_metadata_calls_pass_through(gateway):
    client = grpcclient.InferenceServerClient(gateway.url)
    assert client.is_server_ready() and client.is_model_ready("add_one")
    assert client.get_model_metadata("add_one").name == "add_one"
    answers = []
    client.start_stream(callback=lambda result, error: answers.append(error or result.as_numpy("OUTPUT0").tolist()))
    for value in range(5):
        client.async_stream_infer("add_one", add_one_inputs([value]), request_id=str(value))
    client.stop_stream()
    client.close()
    assert sorted(answers) == [[v + 1.0] for v in range(5)]


def test_grpc_timeout_headers_round_trip():
    assert parse_timeout("100m") == pytest.approx(0.1)
    assert parse_timeout("5S") == 5.0 and parse_timeout("2H") == 7200.0
    assert parse_timeout("12") is None and parse_timeout("m") is None and parse_timeout("") is None
    assert parse_timeout(format_timeout(1.5)) == pytest.approx(1.5)
    assert format_timeout(0) == "1u"


class RawClient(Connection):
    """An HTTP/2 client that sends a gRPC call's DATA frames exactly as cut by the test."""

    def __init__(self):
        super().__init__(client=True)
        self.answers: dict[int, bytearray] = {}
        self.trailers: dict[int, dict[str, str]] = {}
        self._done: dict[int, asyncio.Event] = {}

    def on_headers(self, stream_id, headers, end_stream):
        if end_stream:
            self.trailers[stream_id] = dict(headers)
            self._done[stream_id].set()

    def on_data(self, stream_id, data, end_stream):
        self.answers[stream_id] += data

    async def infer(self, stream_id: int, pieces: list[bytes]) -> None:
        """A ModelInfer call on `stream_id` whose message goes as these DATA frames (none: no message)."""
        headers = [(":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
                   (":authority", "gateway"), ("content-type", "application/grpc"), ("te", "trailers")]
        self.answers[stream_id] = bytearray()
        self._done[stream_id] = asyncio.Event()
        self.open_stream(stream_id)
        self.send_headers(stream_id, headers, not pieces)
        for index, piece in enumerate(pieces):
            self.send_data(stream_id, piece, index == len(pieces) - 1)
            await asyncio.sleep(0.01)  # each DATA frame in a read of its own, as a slow client sends them
        await asyncio.wait_for(self._done[stream_id].wait(), 30)


async def _raw_client(url: str) -> RawClient:
    host, _, port = url.rpartition(":")
    _, client = await asyncio.get_running_loop().create_connection(RawClient, host, int(port))
    return client


def _add_one_message(values: np.ndarray) -> bytes:
    """A ModelInferRequest for add_one, with its gRPC message prefix."""
    request = service_pb2.ModelInferRequest(model_name="add_one")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[len(values)])
    request.raw_input_contents.append(values.tobytes())
    body = request.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def _output(client: RawClient, stream_id: int) -> np.ndarray:
    answer = service_pb2.ModelInferResponse.FromString(bytes(client.answers[stream_id][5:]))
    return np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)


@pytest.mark.parametrize("elements, cuts", [
    (3, [2, 7]),  # the first DATA frame ends inside the gRPC prefix, the next inside the model name
    (3, [30]),  # ... inside the tensor's description
    (40_000, [60, 70_000, 150_000]),  # 160 KB: the routing fields in the first frame, the tensor spread
], ids=["cut-in-prefix-and-name", "cut-in-inputs", "large-in-four"])
def test_a_request_in_awkwardly_cut_data_frames_is_routed_and_answered(gateway, elements, cuts):
    values = np.arange(elements, dtype=np.float32)
    message = _add_one_message(values)

    async def scenario():
        client = await _raw_client(gateway.url)
        await client.infer(1, [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)])])
        client.close()
        return client

    client = asyncio.run(scenario())
    assert client.trailers[1].get("grpc-status") == "0", client.trailers
    assert np.array_equal(_output(client, 1), values + 1)


def test_a_call_without_a_message_is_refused_and_the_connection_goes_on(gateway):
    values = np.arange(3, dtype=np.float32)

    async def scenario():
        client = await _raw_client(gateway.url)
        await client.infer(1, [])  # HEADERS with END_STREAM: no request message at all
        await client.infer(3, [_add_one_message(values)])
        client.close()
        return client

    client = asyncio.run(scenario())
    assert client.trailers[1].get("grpc-status") == str(grpc.StatusCode.INVALID_ARGUMENT.value[0]), client.trailers
    assert "carries one gRPC message" in urllib.parse.unquote(client.trailers[1].get("grpc-message", ""))
    assert client.trailers[3].get("grpc-status") == "0", client.trailers
    assert np.array_equal(_output(client, 3), values + 1)
