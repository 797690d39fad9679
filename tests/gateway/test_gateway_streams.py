"""`ModelStreamInfer` through the gateway: a stateless stream spreads per message, a sequence stays on
its pod, a decoupled model answers 0..n times, and a bad message spoils only itself."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.gateway.helpers import StreamClient, add_one_inputs, served_counts
from tests.gateway.polling import metric, served_since

pytestmark = pytest.mark.slow


def scalar_input(name: str, value, datatype: str, batched: bool = False) -> grpcclient.InferInput:
    """A one-element tensor; `batched` adds the batch dimension of a model with max_batch_size > 0."""
    dtype = {"FP32": np.float32, "INT32": np.int32}[datatype]
    data = np.array([[value]] if batched else [value], dtype=dtype)
    tensor = grpcclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def test_stateless_stream_messages_spread_over_every_pod(fleet3, gateway3):
    before = served_counts(fleet3, "add_one")
    stream = StreamClient(gateway3.url)
    for index in range(150):
        stream.send("add_one", add_one_inputs([index]), request_id=str(index))
        time.sleep(0.01)  # a camera's pace (faster than 30 FPS), not one burst
    answers = stream.close()
    assert all(error is None for _, error in answers), [e for _, e in answers if e][:3]
    got = {int(result.get_response().id): result.as_numpy("OUTPUT0")[0] for result, _ in answers}
    assert got == {index: index + 1 for index in range(150)}
    deltas = served_since(fleet3, "add_one", before, 150)
    assert all(abs(delta / 150 - 1 / 3) <= 0.10 for delta in deltas), deltas


def test_a_sequence_stays_on_its_pod(fleet3, gateway3):
    before = served_counts(fleet3, "running_sum")
    stream = StreamClient(gateway3.url)
    sequences = {101: 1.0, 202: 10.0, 303: 100.0}
    for step in range(8):
        for sequence_id, value in sequences.items():
            stream.send("running_sum", [scalar_input("INPUT0", value, "FP32", batched=True)], sequence_id=sequence_id,
                        sequence_start=step == 0, sequence_end=step == 7, request_id=f"{sequence_id}-{step}")
    answers = stream.close()
    assert all(error is None for _, error in answers), [e for _, e in answers if e][:3]
    sums = {result.get_response().id: float(result.as_numpy("SUM").reshape(-1)[0]) for result, _ in answers}
    # Each pod keeps its own sums: a message on the wrong pod would have no state (or another's).
    for sequence_id, value in sequences.items():
        assert [sums[f"{sequence_id}-{step}"] for step in range(8)] == [value * (step + 1) for step in range(8)]
    deltas = served_since(fleet3, "running_sum", before, 24)
    assert sorted(delta % 8 for delta in deltas) == [0, 0, 0] and sum(deltas) == 24, deltas


def test_a_sequence_that_never_started_gets_a_clear_error(gateway3):
    stream = StreamClient(gateway3.url)
    stream.send("running_sum", [scalar_input("INPUT0", 1.0, "FP32", batched=True)], sequence_id=999, request_id="orphan")
    stream.send("add_one", add_one_inputs([1]), request_id="after")
    answers = stream.close()
    errors = [str(error) for _, error in answers if error is not None]
    assert len(errors) == 1 and "sequence 999" in errors[0] and "FAILED_PRECONDITION" in errors[0]
    assert [result.get_response().id for result, error in answers if error is None] == ["after"]


def test_decoupled_model_answers_zero_to_n_times_through_the_stream(fleet3, gateway3):
    before = served_counts(fleet3, "countdown")
    stream = StreamClient(gateway3.url)
    counts = [3, 0, 5, 1] * 6
    for index, count in enumerate(counts):
        stream.send("countdown", [scalar_input("COUNT", count, "INT32")], request_id=f"c{index}")
    answers = stream.close()
    assert all(error is None for _, error in answers), [e for _, e in answers if e][:3]
    by_request: dict[str, list[int]] = {}
    for result, _ in answers:
        by_request.setdefault(result.get_response().id, []).append(int(result.as_numpy("VALUE")[0]))
    expected = {f"c{i}": list(range(n - 1, -1, -1)) for i, n in enumerate(counts) if n}
    assert {key: sorted(values, reverse=True) for key, values in by_request.items()} == expected
    deltas = served_since(fleet3, "countdown", before, len(counts))
    assert sum(deltas) == len(counts) and sum(1 for d in deltas if d) >= 2, deltas


def test_a_malformed_stream_message_spoils_only_itself(gateway3):
    import grpc

    from tritonclient.grpc import service_pb2

    good = service_pb2.ModelInferRequest(model_name="add_one", id="good")
    good.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
    good.raw_input_contents.append(np.array([4], dtype=np.float32).tobytes())
    refused_before = _invalid_stream_messages(gateway3)
    with grpc.insecure_channel(gateway3.url) as channel:
        call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = [service_pb2.ModelStreamInferResponse.FromString(r)
                   for r in call(iter([b"\xff\xff\xff", good.SerializeToString()]), timeout=10)]
    errors = [r.error_message for r in replies if r.error_message]
    assert len(errors) == 1 and errors[0].startswith("INVALID_ARGUMENT: malformed ModelInferRequest")
    answered = [r.infer_response for r in replies if not r.error_message]
    assert [a.id for a in answered] == ["good"]
    assert np.frombuffer(answered[0].raw_output_contents[0], dtype=np.float32).tolist() == [5.0]
    # The gateway refused the bad message itself (no pod saw it), and counted it so.
    assert _invalid_stream_messages(gateway3) == refused_before + 1


def _invalid_stream_messages(gateway) -> float:
    return metric(gateway.metrics_url, "tritonfleet_gateway_requests_total", method="ModelStreamInfer",
                  code="INVALID_ARGUMENT")
