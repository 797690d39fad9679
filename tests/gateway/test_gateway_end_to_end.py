"""End to end through the gateway process, in front of three real Triton servers, with unchanged
tritonclient clients; HAProxy `mode tcp` (the L4 baseline) shows what the gateway fixes."""

from __future__ import annotations

import asyncio
import queue
import threading
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.gateway.helpers import add_one_inputs, served_counts
from tests.gateway.polling import metric, served_since
from tritonfleet.proxies import start_haproxy

pytestmark = pytest.mark.slow
REQUESTS = 300


def send_sequentially(url: str, count: int) -> None:
    client = grpcclient.InferenceServerClient(url)  # one client, one channel, one HTTP/2 connection
    try:
        for _ in range(count):
            client.infer("add_one", add_one_inputs())
    finally:
        client.close()


def shares(fleet, before: list[int]) -> list[float]:
    deltas = served_since(fleet, "add_one", before, REQUESTS)
    assert sum(deltas) == REQUESTS, deltas
    return [d / REQUESTS for d in deltas]


def test_one_channel_spreads_through_the_gateway_but_not_through_l4(fleet3, gateway3, tmp_path):
    before = served_counts(fleet3, "add_one")
    send_sequentially(gateway3.url, REQUESTS)
    through_gateway = shares(fleet3, before)
    assert all(abs(share - 1 / 3) <= 0.05 for share in through_gateway), through_gateway

    with start_haproxy([s.grpc_url for s in fleet3], tmp_path) as haproxy:
        before = served_counts(fleet3, "add_one")
        send_sequentially(haproxy.url, REQUESTS)
        through_l4 = shares(fleet3, before)
    # One connection, one pod: the whole point of the gateway.
    assert max(through_l4) == 1.0, through_l4


def test_sync_async_and_streaming_clients_work_unchanged(gateway3, fleet3):
    client = grpcclient.InferenceServerClient(gateway3.url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("add_one")
    assert not client.is_model_ready("no_such_model")
    assert client.get_model_metadata("add_one").name == "add_one"
    assert client.get_model_config("add_one").config.name == "add_one"
    names = {model.name for model in client.get_model_repository_index().models}
    pod = grpcclient.InferenceServerClient(fleet3[0].grpc_url)
    # The pods' repository, as the pods list it (every pod has the same one here).
    assert names == {model.name for model in pod.get_model_repository_index().models}
    assert {"add_one", "slow", "running_sum", "countdown"} <= names
    pod.close()
    result = client.infer("add_one", add_one_inputs([1, 2, 3]), request_id="sync-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [2, 3, 4])
    assert result.get_response().id == "sync-1"

    async def async_calls():
        async with aioclient.InferenceServerClient(gateway3.url) as aio:
            inputs = [aioclient.InferInput("INPUT0", [2], "FP32")]
            inputs[0].set_data_from_numpy(np.array([5, 6], dtype=np.float32))
            replies = await asyncio.gather(*(aio.infer("add_one", inputs) for _ in range(12)))
            return [r.as_numpy("OUTPUT0").tolist() for r in replies]

    assert asyncio.run(async_calls()) == [[6, 7]] * 12

    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for index in range(6):
        client.async_stream_infer("add_one", add_one_inputs([index]), request_id=f"s{index}")
    client.stop_stream()
    got = {}
    while not answers.empty():
        result, error = answers.get()
        assert error is None, error
        got[result.get_response().id] = result.as_numpy("OUTPUT0").tolist()
    assert got == {f"s{i}": [i + 1] for i in range(6)}
    client.close()


def test_unknown_model_and_bad_input_get_the_pods_status(gateway3):
    client = grpcclient.InferenceServerClient(gateway3.url)
    with pytest.raises(InferenceServerException) as missing:
        client.infer("no_such_model", add_one_inputs())
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    wrong = grpcclient.InferInput("WRONG", [1], "FP32")
    wrong.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    with pytest.raises(InferenceServerException) as invalid:
        client.infer("add_one", [wrong])
    assert invalid.value.status() == "StatusCode.INVALID_ARGUMENT"
    client.close()


def test_admin_calls_are_refused(gateway3):
    client = grpcclient.InferenceServerClient(gateway3.url)
    for call in (lambda: client.unload_model("add_one"), lambda: client.load_model("add_one"),
                 lambda: client.get_system_shared_memory_status(), lambda: client.update_log_settings({})):
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
    assert client.is_model_ready("add_one")
    client.close()


def test_malformed_bytes_get_invalid_argument_and_hurt_no_one(gateway3):
    errors: list[Exception] = []

    def good_traffic():
        try:
            send_sequentially(gateway3.url, 60)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=good_traffic)
    worker.start()
    with grpc.insecure_channel(gateway3.url) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x50short", b"\x0b\x0c", b""):
            with pytest.raises(grpc.RpcError) as rejected:
                raw(garbage, timeout=5)
            assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT, garbage
    worker.join()
    assert not errors


def test_metrics_follow_the_contract(gateway3, fleet3):
    send_sequentially(gateway3.url, 5)
    text = urllib.request.urlopen(gateway3.metrics_url, timeout=5).read().decode()
    for server in fleet3:
        assert f'tritonfleet_gateway_backend_up{{backend="{server.grpc_url}"}} 1.0' in text
        assert f'tritonfleet_gateway_backend_model_ready{{backend="{server.grpc_url}",model="add_one"}} 1.0' in text
        assert f'tritonfleet_gateway_inflight{{backend="{server.grpc_url}"}} 0.0' in text
    assert 'tritonfleet_gateway_requests_total{backend="' in text
    assert 'method="ModelInfer",model="add_one"' in text
    for family in ("request_duration_seconds_bucket", "overhead_seconds_bucket", "retries_total",
                   "ejections_total", "active_streams", 'bytes_total{direction="in"}', 'bytes_total{direction="out"}'):
        assert f"tritonfleet_gateway_{family}" in text, family
    # A healthy fleet needs no retry and ejects no pod; test_gateway_resilience.py kills a pod and
    # checks that both counters move.
    assert metric(gateway3.metrics_url, "tritonfleet_gateway_retries_total") == 0
    assert metric(gateway3.metrics_url, "tritonfleet_gateway_ejections_total") == 0


def test_gateway_readiness_for_a_raw_v2_client(gateway3):
    from tritonclient.grpc import service_pb2

    with grpc.insecure_channel(gateway3.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name="countdown"), timeout=5).ready


def test_several_workers_share_one_port_and_merge_their_metrics(fleet3, tmp_path):
    from tests.gateway.helpers import GatewayProcess

    with GatewayProcess([s.grpc_url for s in fleet3], tmp_path / "gateway.log", workers=2) as gateway:
        clients = [grpcclient.InferenceServerClient(gateway.url) for _ in range(4)]  # 4 connections
        for client in clients:
            for _ in range(5):
                client.infer("add_one", add_one_inputs())
            client.close()
        text = urllib.request.urlopen(gateway.metrics_url, timeout=5).read().decode()
    served_ok = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith("tritonfleet_gateway_requests_total{") and 'code="OK"' in line
    )
    assert served_ok == 20, text[:2000]


def test_a_unary_sequence_stays_on_its_pod(gateway3):
    client = grpcclient.InferenceServerClient(gateway3.url)

    def step(sequence_id, start=False, end=False):
        value = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        value.set_data_from_numpy(np.array([[2.0]], dtype=np.float32))
        result = client.infer("running_sum", [value], sequence_id=sequence_id, sequence_start=start,
                              sequence_end=end)
        return float(result.as_numpy("SUM").reshape(-1)[0])

    sums = [step(77, start=True)] + [step(77) for _ in range(4)] + [step(77, end=True)]
    assert sums == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    with pytest.raises(InferenceServerException) as orphan:
        step(78)
    assert orphan.value.status() == "StatusCode.FAILED_PRECONDITION" and "sequence 78" in orphan.value.message()
    client.close()
