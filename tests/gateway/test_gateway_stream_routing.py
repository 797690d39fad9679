"""`ModelStreamInfer` routed per message at the frame level, seen from the pods: one stream's stateless
messages spread over every pod, each sequence stays on its pod among stateless messages, a decoupled
model's answers all come back, a bad message is answered with its own error and the stream goes on,
a client that sends faster than the fleet answers is held to MAX_OUTSTANDING messages in flight, and a
client that resets its stream has its calls cancelled on the pod."""

from __future__ import annotations

import queue
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway.routing.streams import MAX_OUTSTANDING
from tests.gateway.helpers import GatewayProcess, StreamClient, add_one_inputs, served_counts
from tests.gateway.polling import metric, served_since, wait_for
from tritonfleet.triton_server import start_fleet, stop_all

pytestmark = pytest.mark.slow
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
PASS_THROUGH = Path(__file__).resolve().parent / "pass_through_repository"


def running_sum_input(value: float) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return [tensor]


def countdown_input(count: int) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("COUNT", [1], "INT32")
    tensor.set_data_from_numpy(np.array([count], dtype=np.int32))
    return [tensor]


def add_one_request(request_id: str, value: float, model: str = "add_one") -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
    request.raw_input_contents.append(np.array([value], dtype=np.float32).tobytes())
    return request.SerializeToString()


def test_one_streams_stateless_messages_go_to_every_pod(fleet3, gateway3):
    before = served_counts(fleet3, "add_one")
    stream = StreamClient(gateway3.url)
    for index in range(90):
        stream.send("add_one", add_one_inputs([index]), request_id=str(index))
    answers = stream.close()
    assert all(error is None for _, error in answers), [str(e) for _, e in answers if e][:3]
    got = {int(result.get_response().id): result.as_numpy("OUTPUT0")[0] for result, _ in answers}
    assert got == {index: index + 1 for index in range(90)}
    # A stream pinned to one pod (what an L4 balancer or Envoy does) would give two pods nothing. The
    # shares are not asserted: with 90 messages in flight the fleet is loaded, so measured latency
    # decides, and on a shared node one pod can be clearly slower for a while (CI saw 34, 42, 14).
    deltas = served_since(fleet3, "add_one", before, 90)
    assert sum(deltas) == 90 and min(deltas) >= 1, deltas


def test_large_messages_cross_a_stream_intact(gateway3):
    stream = StreamClient(gateway3.url)
    tensors = {index: np.arange(index, index + (1 << 20), dtype=np.float32) for index in range(4)}  # 4 MiB each
    for index, values in tensors.items():
        tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
        tensor.set_data_from_numpy(values)
        stream.send("add_one", [tensor], request_id=str(index))
    answers = stream.close()
    assert all(error is None for _, error in answers), [str(e) for _, e in answers if e][:3]
    got = {int(result.get_response().id): result.as_numpy("OUTPUT0") for result, _ in answers}
    assert sorted(got) == sorted(tensors)
    for index, values in tensors.items():
        np.testing.assert_array_equal(got[index], values + 1)


def test_two_sequences_on_one_stream_keep_their_pods_among_stateless_messages(fleet3, gateway3):
    before = served_counts(fleet3, "running_sum")
    stream = StreamClient(gateway3.url)
    steps, sequences = 6, {7001: 1.0, 7002: 10.0}
    for step in range(steps):
        for sequence_id, value in sequences.items():
            stream.send("running_sum", running_sum_input(value), sequence_id=sequence_id,
                        sequence_start=step == 0, sequence_end=step == steps - 1, request_id=f"{sequence_id}-{step}")
            stream.send("add_one", add_one_inputs([step]), request_id=f"free-{sequence_id}-{step}")
    answers = stream.close()
    assert all(error is None for _, error in answers), [str(e) for _, e in answers if e][:3]
    ids = [result.get_response().id for result, _ in answers]
    assert sorted(i for i in ids if i.startswith("free-")) == sorted(
        f"free-{s}-{step}" for s in sequences for step in range(steps))
    sums = {result.get_response().id: float(result.as_numpy("SUM").reshape(-1)[0])
            for result, _ in answers if result.get_response().model_name == "running_sum"}
    # A message on another pod would find no running sum there (or another sequence's).
    for sequence_id, value in sequences.items():
        assert [sums[f"{sequence_id}-{step}"] for step in range(steps)] == [value * (s + 1) for s in range(steps)]
    deltas = served_since(fleet3, "running_sum", before, 2 * steps)
    assert sum(deltas) == 2 * steps and all(delta % steps == 0 for delta in deltas), deltas


def test_every_answer_of_a_decoupled_model_arrives(fleet3, gateway3):
    stream = StreamClient(gateway3.url)
    counts = {"d0": 4, "d1": 0, "d2": 7, "d3": 2, "d4": 4, "d5": 1}
    for request_id, count in counts.items():
        stream.send("countdown", countdown_input(count), request_id=request_id)
    answers = stream.close()
    assert all(error is None for _, error in answers), [str(e) for _, e in answers if e][:3]
    values: dict[str, list[int]] = {}
    for result, _ in answers:
        values.setdefault(result.get_response().id, []).append(int(result.as_numpy("VALUE")[0]))
    assert {key: sorted(got, reverse=True) for key, got in values.items()} == {
        key: list(range(count - 1, -1, -1)) for key, count in counts.items() if count}


def test_a_bad_message_gets_its_own_error_and_the_stream_goes_on(gateway3):
    messages = [b"\x0a\xff", add_one_request("first", 1.0), add_one_request("lost", 1.0, model="no_such_model"),
                add_one_request("second", 2.0)]
    with grpc.insecure_channel(gateway3.url) as channel:
        call = channel.stream_stream(STREAM_METHOD)
        replies = [service_pb2.ModelStreamInferResponse.FromString(r) for r in call(iter(messages), timeout=20)]
    errors = sorted(r.error_message for r in replies if r.error_message)
    assert len(errors) == 2, errors
    assert errors[0].startswith("INVALID_ARGUMENT: malformed ModelInferRequest"), errors
    # An error names the request and its model, so that a client with many in flight knows which failed.
    assert errors[1].startswith("NOT_FOUND: request 'lost' for model 'no_such_model'"), errors
    answered = {r.infer_response.id: np.frombuffer(r.infer_response.raw_output_contents[0], np.float32).tolist()
                for r in replies if not r.error_message}
    assert answered == {"first": [2.0], "second": [3.0]}


def test_a_stream_has_at_most_max_outstanding_messages_on_the_pods(gateway3):
    delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([500], dtype=np.int32))
    stream = StreamClient(gateway3.url)
    total = MAX_OUTSTANDING + 40
    for index in range(total):
        stream.send("slow", add_one_inputs([index]) + [delay], request_id=str(index))
    seen: list[float] = []

    def all_answered() -> bool:
        seen.append(metric(gateway3.metrics_url, "tritonfleet_gateway_inflight"))
        return stream.answers.qsize() >= total

    assert wait_for(all_answered, timeout=120), stream.answers.qsize()
    answers = stream.close()
    assert all(error is None for _, error in answers), [str(e) for _, e in answers if e][:3]
    assert sorted(int(result.get_response().id) for result, _ in answers) == list(range(total))
    # The others waited, their bytes not granted back to the client, until answers made room.
    assert max(seen) == MAX_OUTSTANDING, max(seen)


@pytest.fixture(scope="module")
def cancel_pod(tmp_path_factory):
    servers = start_fleet(1, PASS_THROUGH, tmp_path_factory.mktemp("cancel-pod"))
    yield servers[0]
    stop_all(servers)


def cancelled_on_the_pod(pod) -> int:
    """How many requests the pod's `cancellable` model saw cancelled, asked of the pod directly."""
    client = grpcclient.InferenceServerClient(pod.grpc_url)
    query = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    query.set_data_from_numpy(np.array([-1], dtype=np.int32))
    try:
        return int(client.infer("cancellable", [query], client_timeout=2).as_numpy("DONE")[0])
    except InferenceServerException:  # the model is still busy with the request
        return -1
    finally:
        client.close()


def test_a_stream_the_client_resets_cancels_its_calls_on_the_pod(cancel_pod, tmp_path):
    started = tmp_path / "started"
    request = service_pb2.ModelInferRequest(model_name="cancellable", id="long")
    request.inputs.add(name="DELAY_MS", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([60_000], dtype=np.int32).tobytes())
    request.parameters["started_file"].string_param = str(started)
    before = cancelled_on_the_pod(cancel_pod)
    with GatewayProcess([cancel_pod.grpc_url], tmp_path / "gateway.log") as gateway:
        def inflight() -> float:
            return metric(gateway.metrics_url, "tritonfleet_gateway_inflight", backend=cancel_pod.grpc_url)

        messages: queue.Queue = queue.Queue()
        messages.put(request.SerializeToString())
        with grpc.insecure_channel(gateway.url) as channel:
            call = channel.stream_stream(STREAM_METHOD)(iter(messages.get, None))
            assert wait_for(started.exists), "the model never started on the message"
            assert inflight() == 1
            assert metric(gateway.metrics_url, "tritonfleet_gateway_active_streams") == 1
            call.cancel()
            # The model, a minute from answering, sees its request cancelled; the gateway holds nothing.
            assert wait_for(lambda: cancelled_on_the_pod(cancel_pod) == before + 1, timeout=20)
            assert wait_for(lambda: inflight() == 0), inflight()
            assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_active_streams") == 0)
            messages.put(None)
