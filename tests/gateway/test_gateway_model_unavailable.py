"""A model's own UNAVAILABLE (a model out of capacity: Triton's Python backend has no RESOURCE_EXHAUSTED)
is the model's answer, not a lost pod: the client gets it as it is, no pod is ejected, and the pod goes on
answering. A pod that really goes away is still ejected. Unary calls (with and without
a sequence id) and ModelStreamInfer, against real Triton servers."""

from __future__ import annotations

import os
import queue
import signal

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.gateway.helpers import TEST_REPOSITORY, GatewayProcess, served_counts
from tests.gateway.polling import metric, wait_for
from tritonfleet.triton_server import start_fleet, stop_all

pytestmark = pytest.mark.slow

MODEL = "refuse_when_asked"
# What the test model says when it refuses (tests/gateway/model_repository/refuse_when_asked/1/model.py).
REFUSAL = "decoder limit reached"
EJECTIONS = "tritonfleet_gateway_ejections_total"


@pytest.fixture(scope="module")
def fleet2(tmp_path_factory):
    servers = start_fleet(2, TEST_REPOSITORY, tmp_path_factory.mktemp("refusing-fleet"))
    yield servers
    stop_all(servers)


@pytest.fixture(scope="module", params=["frames"])
def gateway(request, fleet2, tmp_path_factory):
    log = tmp_path_factory.mktemp(f"gateway-{request.param}") / "gateway.log"
    with GatewayProcess([s.grpc_url for s in fleet2], log) as process:
        yield process


def refuse_inputs(value: float, refuse: bool = False) -> list[grpcclient.InferInput]:
    data = grpcclient.InferInput("INPUT0", [1], "FP32")
    data.set_data_from_numpy(np.array([value], dtype=np.float32))
    flag = grpcclient.InferInput("REFUSE", [1], "BOOL")
    flag.set_data_from_numpy(np.array([refuse]))
    return [data, flag]


def output(result) -> list[float]:
    return result.as_numpy("OUTPUT0").tolist()


def answered_since(before: list[int], servers) -> list[int]:
    """Successful inferences of the test model per server since `before` (Triton counts a moment late)."""
    return [after - was for was, after in zip(before, served_counts(servers, MODEL))]


def assert_refused(call) -> None:
    with pytest.raises(InferenceServerException) as refused:
        call()
    assert refused.value.status() == str(grpc.StatusCode.UNAVAILABLE), refused.value
    assert REFUSAL in refused.value.message(), refused.value


def test_a_refused_unary_call_reaches_the_client_and_its_pod_stays_in_rotation(gateway, fleet2):
    client = grpcclient.InferenceServerClient(gateway.url)
    ejections = metric(gateway.metrics_url, EJECTIONS)
    before = served_counts(fleet2, MODEL)
    for sequence_id in range(1, 9):
        # The sequence stays on the pod that refused its start: the pod answers what follows.
        assert_refused(lambda: client.infer(MODEL, refuse_inputs(1, refuse=True), sequence_id=sequence_id,
                                            sequence_start=True))
        assert output(client.infer(MODEL, refuse_inputs(sequence_id), sequence_id=sequence_id,
                                   sequence_end=True)) == [sequence_id + 1]
        assert_refused(lambda: client.infer(MODEL, refuse_inputs(1, refuse=True)))
        assert output(client.infer(MODEL, refuse_inputs(-sequence_id))) == [1 - sequence_id]
    client.close()
    # Both pods refused and went on answering, and neither was ejected (nor the refusals retried).
    assert wait_for(lambda: min(answered_since(before, fleet2)) >= 1), answered_since(before, fleet2)
    assert metric(gateway.metrics_url, EJECTIONS) == ejections
    assert metric(gateway.metrics_url, "tritonfleet_gateway_retries_total", model=MODEL) == 0


def test_a_refused_stream_message_reaches_the_client_and_the_stream_goes_on(gateway, fleet2):
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(gateway.url)
    ejections = metric(gateway.metrics_url, EJECTIONS)
    before = served_counts(fleet2, MODEL)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = 0
    for index in range(8):
        sequence_id = 100 + index
        client.async_stream_infer(MODEL, refuse_inputs(1, refuse=True), request_id=f"refused-{index}")
        client.async_stream_infer(MODEL, refuse_inputs(index), request_id=f"answered-{index}")
        client.async_stream_infer(MODEL, refuse_inputs(1, refuse=True), request_id=f"refused-start-{index}",
                                  sequence_id=sequence_id, sequence_start=True)
        client.async_stream_infer(MODEL, refuse_inputs(index), request_id=f"answered-end-{index}",
                                  sequence_id=sequence_id, sequence_end=True)
        sent += 4
    outcomes = [answers.get(timeout=30) for _ in range(sent)]
    client.stop_stream()
    client.close()
    errors = [str(error) for _, error in outcomes if error is not None]
    answered = sorted(output(result)[0] for result, error in outcomes if error is None)
    assert len(errors) == sent // 2 and all(REFUSAL in message for message in errors), errors
    assert answered == sorted([index + 1.0 for index in range(8)] * 2), answered
    assert wait_for(lambda: min(answered_since(before, fleet2)) >= 1), answered_since(before, fleet2)
    assert metric(gateway.metrics_url, EJECTIONS) == ejections


@pytest.mark.parametrize("path", ["unary", "stream"])
def test_a_killed_pod_is_still_ejected(triton_fleet, tmp_path, path):
    """The sequence's pod dies under it: its next message (unary) or its stream's loss is a transport
    failure, and the pod is ejected; the gateway's health checks alone never count as an ejection."""
    servers = triton_fleet(2, repo=TEST_REPOSITORY)
    urls = [s.grpc_url for s in servers]
    with GatewayProcess(urls, tmp_path / "gateway.log") as gateway:
        client = grpcclient.InferenceServerClient(gateway.url)
        answers: queue.Queue = queue.Queue()
        if path == "stream":
            client.start_stream(callback=lambda result, error: answers.put((result, error)))
            client.async_stream_infer(MODEL, refuse_inputs(1), sequence_id=7, sequence_start=True)
            result, error = answers.get(timeout=30)
            assert error is None, error
        else:
            assert output(client.infer(MODEL, refuse_inputs(1), sequence_id=7, sequence_start=True)) == [2.0]
        # Triton counts an answer a moment after sending it.
        assert wait_for(lambda: sum(served_counts(servers, MODEL)) == 1), "statistics never caught up"
        victim = served_counts(servers, MODEL).index(1)
        assert metric(gateway.metrics_url, EJECTIONS) == 0
        os.killpg(servers[victim].process.pid, signal.SIGKILL)
        servers[victim].process.wait(timeout=10)
        if path == "stream":
            result, error = answers.get(timeout=30)
            assert error is not None and "was lost" in str(error), (result, error)
            client.stop_stream()
        else:
            with pytest.raises(InferenceServerException) as lost:
                client.infer(MODEL, refuse_inputs(2), sequence_id=7, sequence_end=True)
            assert lost.value.status() == str(grpc.StatusCode.UNAVAILABLE), lost.value
        client.close()
        assert wait_for(lambda: metric(gateway.metrics_url, EJECTIONS, backend=urls[victim]) >= 1), \
            "the killed pod was not ejected"
        assert metric(gateway.metrics_url, EJECTIONS, backend=urls[1 - victim]) == 0
