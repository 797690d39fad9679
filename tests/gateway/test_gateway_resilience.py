"""Resilience: a killed pod under load, a frozen one, a model unloaded on one pod, admin calls applied
to every pod, the per-pod in-flight limit, and the drain on SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.gateway.helpers import TEST_REPOSITORY, GatewayProcess, add_one_inputs, served_counts
from tritonfleet.triton_server import start_fleet, stop_all

pytestmark = pytest.mark.slow
EXPLICIT = ["--model-control-mode=explicit", "--load-model=*"]


@pytest.fixture(scope="module")
def explicit_fleet(tmp_path_factory):
    servers = start_fleet(3, TEST_REPOSITORY, tmp_path_factory.mktemp("explicit"), extra_args=EXPLICIT)
    yield servers
    stop_all(servers)


def slow_inputs(delay_ms: int):
    tensors = add_one_inputs([1.0])
    delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    return tensors + [delay]


def infer_many(url: str, count: int, model: str = "add_one") -> list[Exception]:
    client = grpcclient.InferenceServerClient(url)
    failures = []
    for _ in range(count):
        try:
            client.infer(model, add_one_inputs())
        except InferenceServerException as exc:
            failures.append(exc)
    client.close()
    return failures


def test_a_pod_with_the_model_unloaded_gets_none_of_its_requests(explicit_fleet, tmp_path):
    a, b, c = explicit_fleet
    with GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log") as gateway:
        assert not infer_many(gateway.url, 30)
        direct = grpcclient.InferenceServerClient(c.grpc_url)
        direct.unload_model("add_one")
        before = served_counts([a, b], "add_one")
        # No pause: requests racing the unload are retried on a pod that has the model.
        assert not infer_many(gateway.url, 90)
        after = served_counts([a, b], "add_one")
        assert sum(after) - sum(before) == 90
        assert not direct.is_model_ready("add_one")
        direct.load_model("add_one")
        direct.close()


def test_admin_calls_when_enabled_reach_every_pod(explicit_fleet, tmp_path):
    with GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log", "--allow-admin") as gateway:
        client = grpcclient.InferenceServerClient(gateway.url)
        client.unload_model("slow")
        assert not client.is_model_ready("slow")
        for server in explicit_fleet:
            assert not grpcclient.InferenceServerClient(server.grpc_url).is_model_ready("slow")
        with pytest.raises(InferenceServerException) as gone:
            client.infer("slow", add_one_inputs())
        assert gone.value.status() == "StatusCode.UNAVAILABLE", gone.value.message()
        client.load_model("slow")
        for server in explicit_fleet:
            assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready("slow")
        assert client.infer("slow", add_one_inputs([1])).as_numpy("OUTPUT0").tolist() == [2.0]
        client.close()


def test_the_in_flight_limit_answers_resource_exhausted_after_a_bounded_wait(explicit_fleet, tmp_path):
    env = {"TRITONFLEET_GATEWAY_MAX_INFLIGHT_PER_BACKEND": "1", "TRITONFLEET_GATEWAY_QUEUE_TIMEOUT_S": "0.2"}
    with GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log", env=env) as gateway:
        def one(_):
            client = grpcclient.InferenceServerClient(gateway.url)
            try:
                client.infer("slow", slow_inputs(1500))
                return "OK"
            except InferenceServerException as exc:
                return exc.status()
            finally:
                client.close()

        with ThreadPoolExecutor(6) as pool:
            outcomes = sorted(pool.map(one, range(6)))
    # Three pods, one request each at a time: three served, the others refused after the wait.
    assert outcomes.count("OK") == 3 and outcomes.count("StatusCode.RESOURCE_EXHAUSTED") == 3, outcomes


def test_the_client_deadline_reaches_the_pod(explicit_fleet, tmp_path):
    with GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log") as gateway:
        client = grpcclient.InferenceServerClient(gateway.url)
        with pytest.raises(InferenceServerException) as late:
            client.infer("slow", slow_inputs(3000), client_timeout=0.3)
        assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        # The gateway counts it as DEADLINE_EXCEEDED (the deadline went upstream with the request),
        # once the client's reset or the pod's answer has reached it: a moment after the client gave up.
        deadline = time.monotonic() + 5
        while True:
            text = urllib.request.urlopen(gateway.metrics_url, timeout=5).read().decode()
            if 'code="DEADLINE_EXCEEDED"' in text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        client.close()
    assert 'code="DEADLINE_EXCEEDED"' in text and 'model="slow"' in text


def test_sigterm_drains_in_flight_requests_and_ends_streams_politely(explicit_fleet, tmp_path):
    gateway = GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log")
    try:
        results: queue.Queue = queue.Queue()

        def slow_call():
            client = grpcclient.InferenceServerClient(gateway.url)
            try:
                results.put(client.infer("slow", slow_inputs(2000)).as_numpy("OUTPUT0").tolist())
            except InferenceServerException as exc:
                results.put(exc)

        callers = [threading.Thread(target=slow_call) for _ in range(3)]
        stream_answers: queue.Queue = queue.Queue()
        streamer = grpcclient.InferenceServerClient(gateway.url)
        streamer.start_stream(callback=lambda result, error: stream_answers.put((result, error)))
        streamer.async_stream_infer("slow", slow_inputs(2000), request_id="in-flight")
        for caller in callers:
            caller.start()
        # SIGTERM only once all four are on their pods (a call that comes later is refused, rightly).
        wait_for_inflight(gateway, 4)
        os.killpg(gateway.process.pid, signal.SIGTERM)
        for caller in callers:
            caller.join()
        assert gateway.process.wait(timeout=15) == 0
        assert [results.get() for _ in range(3)] == [[2.0]] * 3
        first = stream_answers.get(timeout=5)
        assert first[1] is None and first[0].get_response().id == "in-flight"
        # After its in-flight message, the stream ends with UNAVAILABLE: the client should reconnect.
        second = stream_answers.get(timeout=5)
        assert second[0] is None and "shutting down" in str(second[1])
        streamer.stop_stream()
        with pytest.raises(grpc.FutureTimeoutError):  # nothing listens any more
            with grpc.insecure_channel(gateway.url) as channel:
                grpc.channel_ready_future(channel).result(timeout=1)
    finally:
        gateway.stop()


def wait_for_inflight(gateway: GatewayProcess, count: int, timeout: float = 20.0) -> None:
    """Until the gateway's metrics show `count` requests outstanding at its pods."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(gateway.metrics_url, timeout=5).read().decode()
        inflight = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("tritonfleet_gateway_inflight{"))
        if inflight >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} requests in flight after {timeout} s")


def test_a_killed_pod_under_load_fails_no_retryable_request_and_ends_its_sequences(triton_fleet, tmp_path):
    servers = triton_fleet(3, repo=TEST_REPOSITORY)
    with GatewayProcess([s.grpc_url for s in servers], tmp_path / "gateway.log") as gateway:
        # Sequences on one stream, one per pod at least (the picker spreads their starts).
        answers: queue.Queue = queue.Queue()
        stream = grpcclient.InferenceServerClient(gateway.url)
        stream.start_stream(callback=lambda result, error: answers.put((result, error)))

        def step(sequence_id, start=False, end=False):
            value = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
            value.set_data_from_numpy(np.array([[1.0]], dtype=np.float32))
            stream.async_stream_infer("running_sum", [value], sequence_id=sequence_id, sequence_start=start,
                                      sequence_end=end, request_id=str(sequence_id))

        for sequence_id in range(1, 7):
            step(sequence_id, start=True)
        for _ in range(6):
            error = answers.get(timeout=10)[1]
            assert error is None, str(error)
        time.sleep(0.3)  # the servers' statistics catch up with the answers
        before = served_counts(servers, "running_sum")
        victim = max(range(3), key=lambda i: before[i])

        failures: list = []
        stopping = threading.Event()

        def load():
            client = grpcclient.InferenceServerClient(gateway.url)
            sent = 0
            while not stopping.is_set() and sent < 2000:
                try:
                    client.infer("add_one", add_one_inputs())
                except InferenceServerException as exc:
                    failures.append(exc)
                sent += 1

        workers = [threading.Thread(target=load) for _ in range(3)]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        os.killpg(servers[victim].process.pid, signal.SIGKILL)
        servers[victim].process.wait(timeout=10)
        time.sleep(1.5)
        stopping.set()
        for worker in workers:
            worker.join()
        assert not failures, failures[:3]

        for sequence_id in range(1, 7):
            step(sequence_id, end=True)  # ended sequences let the servers shut down at once
        stream.stop_stream()
        outcomes = []
        while not answers.empty():
            outcomes.append(answers.get())
        errors = [str(error) for _, error in outcomes if error is not None]
        going_on = [float(result.as_numpy("SUM").reshape(-1)[0]) for result, error in outcomes if error is None]
        wait_until_gone(servers[victim].process.pid)
    # Sequences on the killed pod end with a clear error, when it is lost and again at their next
    # message; the others carry on with their state.
    lost = {int(re.search(r"sequence (\d+)", message).group(1)) for message in errors}
    assert len(lost) == before[victim] and going_on == [2.0] * (6 - before[victim]), (errors, going_on)
    assert all("was lost" in message for message in errors), errors


def wait_until_gone(pgid: int, timeout: float = 10.0) -> None:
    """A SIGKILLed server's backend stubs are reaped by init: wait for its process group to empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process group {pgid} of the killed server is still there after {timeout} s")


def test_a_frozen_pod_is_found_by_ping_and_its_calls_are_answered_by_another(triton_fleet, tmp_path):
    """A pod that stops answering without closing its connections (a frozen process, a lost node): the
    gateway pings its connection, gets no answer, drops it and sends the calls that waited there to
    another pod, instead of leaving them hanging until the client's deadline."""
    servers = triton_fleet(2, repo=TEST_REPOSITORY)
    keepalive = {"TRITONFLEET_GATEWAY_KEEPALIVE_TIME_S": "0.5", "TRITONFLEET_GATEWAY_KEEPALIVE_TIMEOUT_S": "0.5"}
    with GatewayProcess([s.grpc_url for s in servers], tmp_path / "gateway.log", env=keepalive) as gateway:
        assert not infer_many(gateway.url, 20)
        answered_after_freeze = [0, 0]
        failures: list = []
        frozen = threading.Event()
        stopping = threading.Event()

        def load(worker: int):
            client = grpcclient.InferenceServerClient(gateway.url)
            for _ in range(5000):
                if stopping.is_set():
                    break
                try:
                    client.infer("slow", slow_inputs(20), client_timeout=30)
                except InferenceServerException as exc:
                    failures.append(exc)
                else:
                    answered_after_freeze[worker] += frozen.is_set()
            client.close()

        workers = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        os.kill(servers[0].process.pid, signal.SIGSTOP)
        try:
            frozen.set()
            time.sleep(5)
            stopping.set()
            for worker in workers:
                worker.join(timeout=60)
        finally:
            os.kill(servers[0].process.pid, signal.SIGCONT)
        assert not failures, failures[:3]
        # Both callers went on being answered while the pod was frozen: neither waited on it for long.
        assert min(answered_after_freeze) >= 10, answered_after_freeze
