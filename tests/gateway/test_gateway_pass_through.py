"""What passes through the gateway untouched, seen from the pod: a client's custom
metadata (the pod's model reads it and answers with it) and a client's cancellation (the pod's model
sees its request cancelled and stops)."""

from __future__ import annotations

import queue
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tests.gateway.helpers import GatewayProcess
from tests.gateway.polling import metric, wait_for
from tritonfleet.triton_server import start_fleet, stop_all

pytestmark = pytest.mark.slow
REPOSITORY = Path(__file__).resolve().parent / "pass_through_repository"


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    # Triton hands the headers that match this pattern to the model as request parameters.
    servers = start_fleet(1, REPOSITORY, tmp_path_factory.mktemp("pass-through"),
                          extra_args=["--grpc-header-forward-pattern=x-tenant.*"])
    yield servers[0]
    stop_all(servers)


@pytest.fixture(scope="module", params=["frames"])
def gateway(request, pod, tmp_path_factory):
    log = tmp_path_factory.mktemp(f"gateway-{request.param}") / "gateway.log"
    with GatewayProcess([pod.grpc_url], log) as process:
        yield process


def echo_inputs() -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT0", [1], "FP32")
    tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
    return [tensor]


def test_custom_metadata_reaches_the_pod_and_its_answer_comes_back(gateway):
    client = grpcclient.InferenceServerClient(gateway.url)
    unary = client.infer("echo_metadata", echo_inputs(), headers={"x-tenant": "acme"})
    assert unary.as_numpy("TENANT").tolist() == [b"acme"]
    assert client.infer("echo_metadata", echo_inputs()).as_numpy("TENANT").tolist() == [b""]
    # On a stream, the stream's metadata reaches the pod with each message.
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers={"x-tenant": "camera-7"})
    client.async_stream_infer("echo_metadata", echo_inputs(), request_id="s")
    result, error = answers.get(timeout=30)
    client.stop_stream()
    client.close()
    assert error is None, error
    assert result.as_numpy("TENANT").tolist() == [b"camera-7"]


def cancelled_on_the_pod(pod) -> int:
    """How many requests the pod's `cancellable` model saw cancelled, asked of the pod directly."""
    client = grpcclient.InferenceServerClient(pod.grpc_url)
    query = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    query.set_data_from_numpy(np.array([-1], dtype=np.int32))
    try:
        return int(client.infer("cancellable", [query], client_timeout=2).as_numpy("DONE")[0])
    except InferenceServerException:  # the model is still busy with the request: not cancelled yet
        return -1
    finally:
        client.close()


def test_a_cancel_reaches_the_pod_and_frees_the_gateway(gateway, pod, tmp_path):
    before = cancelled_on_the_pod(pod)
    started = tmp_path / "started"
    request = service_pb2.ModelInferRequest(model_name="cancellable")
    request.inputs.add(name="DELAY_MS", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([60_000], dtype=np.int32).tobytes())
    request.parameters["started_file"].string_param = str(started)
    with grpc.insecure_channel(gateway.url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer").future(request.SerializeToString())
        inflight = lambda: metric(gateway.metrics_url, "tritonfleet_gateway_inflight", backend=pod.grpc_url)  # noqa: E731
        assert wait_for(started.exists), "the model never started on the call"
        assert inflight() == 1
        call.cancel()
        # The model, a minute from answering, sees its request cancelled and stops; the gateway no
        # longer counts the call as outstanding on the pod.
        assert wait_for(lambda: cancelled_on_the_pod(pod) == before + 1, timeout=20), cancelled_on_the_pod(pod)
        assert wait_for(lambda: inflight() == 0), inflight()
    # The gateway counted it as cancelled by the client.
    assert metric(gateway.metrics_url, "tritonfleet_gateway_requests_total", model="cancellable",
                  code="CANCELLED") >= 1
