"""Faults of issue 18 at small scale, on one fleet of three real Triton servers: a server made 3x
slower under load, kubernetes discovery listing no pod for a while, Prometheus down, the gateway's
SIGTERM with camera streams and unary calls in flight, and a rolling restart of every server (last: it
restarts the fleet). The goal: no request that could have been retried fails, and every stream ends
with a clear status instead of hanging.

kill -9 and SIGSTOP of a server under load are tests/gateway/test_gateway_resilience.py's
(test_a_killed_pod_under_load..., test_a_frozen_pod...); bench/faults/run.py measures all of them.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from observability.prometheus_process import PrometheusProcess
from tests.gateway.fake_kubernetes import FakeKubernetesApiServer, endpoint_slice
from tests.gateway.helpers import GatewayProcess, StreamClient, add_one_inputs
from tests.gateway.polling import metric
from tests.polling import wait_until
from tests.reliability.load import ChildLoad, failures
from tritonfleet.slow_model import set_slow_delay

pytestmark = pytest.mark.slow


def slow_inputs(delay_ms: int):
    value = grpcclient.InferInput("INPUT0", [1], "FP32")
    value.set_data_from_numpy(np.ones(1, dtype=np.float32))
    delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    return [value, delay]


def answered_more(load: ChildLoad, count: int, what: str) -> None:
    """Until the load has had `count` more answers than now: the fleet kept serving through `what`."""
    start = load.answered()
    wait_until(lambda: load.answered() >= start + count, f"{count} more answers {what}", timeout=60)




def test_a_server_turned_3x_slower_under_load_fails_no_request(fault_fleet, tmp_path):
    """One server's `slow` reloaded with 40 ms more than the 20 ms each request asks for, while the load
    runs, and back: the reloads and the slow server cost no request (the picker's share of a slow pod
    is test_a_slow_pod_gets_few_requests_once_the_fleet_is_loaded's)."""
    with GatewayProcess([s.grpc_url for s in fault_fleet], tmp_path / "gateway.log") as gateway:
        load = ChildLoad(gateway.url, delay_ms=20)
        try:
            answered_more(load, 30, "before the fault")
            set_slow_delay(fault_fleet[2], 40)
            answered_more(load, 100, "with one server 3x slower")
            set_slow_delay(fault_fleet[2], 0)
            answered_more(load, 30, "after the server was made fast again")
        finally:
            outcomes = load.stop()
    assert not failures(outcomes), outcomes


def put_slices(api_server: FakeKubernetesApiServer, servers) -> None:
    for index, server in enumerate(servers):
        ip, _, port = server.grpc_url.rpartition(":")
        api_server.put(endpoint_slice(f"triton-{index}", "triton", int(port), [{"ip": ip, "ready": True}]))


def infer_outcome(client, timeout: float = 10.0) -> str:
    try:
        client.infer("add_one", add_one_inputs(), client_timeout=timeout)
        return "OK"
    except InferenceServerException as exc:
        return exc.status()


def test_discovery_listing_no_pod_fails_requests_at_once_with_unavailable_then_takes_the_pods_back(
        fault_fleet, tmp_path):
    with FakeKubernetesApiServer() as api_server:
        put_slices(api_server, fault_fleet)
        kubeconfig = tmp_path / "kubeconfig"
        api_server.kubeconfig(kubeconfig)
        with GatewayProcess([], tmp_path / "gateway.log", "--discovery", "kubernetes", "--kubernetes-service",
                            "triton", env={"KUBECONFIG": str(kubeconfig)}) as gateway:
            client = grpcclient.InferenceServerClient(gateway.url)
            try:
                assert infer_outcome(client) == "OK"
                for index in range(len(fault_fleet)):
                    api_server.delete(f"triton-{index}")
                wait_until(lambda: infer_outcome(client) != "OK", "a request refused once no pod is listed")
                # Refused, each one, not left waiting: a hang would end at the 10 s deadline instead.
                assert [infer_outcome(client) for _ in range(20)] == ["StatusCode.UNAVAILABLE"] * 20
                put_slices(api_server, fault_fleet)
                wait_until(lambda: infer_outcome(client) == "OK", "a request answered once the pods are back")
                assert [infer_outcome(client) for _ in range(20)] == ["OK"] * 20
            finally:
                client.close()


def test_prometheus_down_leaves_serving_untouched_and_scraping_resumes_after_its_restart(fault_fleet, tmp_path):
    """Nothing on the serving path reads Prometheus (the gateway routes on its own health checks and
    measurements): killed, it costs no request; started again on its data, it scrapes again."""
    with GatewayProcess([s.grpc_url for s in fault_fleet], tmp_path / "gateway.log") as gateway:
        prometheus = PrometheusProcess(tmp_path, {"gateway": [gateway.metrics_url]})
        load = ChildLoad(gateway.url)
        try:
            wait_until(lambda: prometheus.last_scrape("gateway") > 0, "Prometheus scraping the gateway")
            prometheus.kill()  # SIGKILL: as a lost node
            answered_more(load, 100, "while Prometheus is down")
            restarted = time.time()
            prometheus.start()
            wait_until(lambda: prometheus.last_scrape("gateway") > restarted, "a scrape after Prometheus restarted")
            answered_more(load, 20, "after Prometheus restarted")
        finally:
            outcomes = load.stop()
            prometheus.child.stop()
    assert not failures(outcomes), outcomes


def test_gateway_sigterm_with_camera_streams_and_unary_load_ends_every_stream_with_a_status(fault_fleet, tmp_path):
    """Camera streams mid-sequence, each with a frame in flight, and unary calls running, when the
    gateway gets SIGTERM: the calls and frames it had are answered, each stream then ends with
    UNAVAILABLE (reconnect), calls that come later are refused with UNAVAILABLE, none hangs.
    (test_sigterm_drains_in_flight_requests_and_ends_streams_politely is the one-stream case.)"""
    gateway = GatewayProcess([s.grpc_url for s in fault_fleet], tmp_path / "gateway.log")
    try:
        cameras = [StreamClient(gateway.url) for _ in range(3)]
        for index, camera in enumerate(cameras):
            for frame in range(3):
                value = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
                value.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
                camera.send("running_sum", [value], sequence_id=500 + index, sequence_start=frame == 0,
                            request_id=f"{index}-{frame}")
            camera.send("slow", slow_inputs(3000), request_id=f"{index}-in-flight")
        stopping = threading.Event()
        unary: queue.Queue = queue.Queue()

        def call_until_refused():
            client = grpcclient.InferenceServerClient(gateway.url)
            while not stopping.is_set():
                unary.put(infer_outcome(client, timeout=20))
            client.close()

        with ThreadPoolExecutor(3) as pool:
            slow_call = pool.submit(lambda: grpcclient.InferenceServerClient(gateway.url).infer(
                "slow", slow_inputs(3000), client_timeout=20).as_numpy("OUTPUT0").tolist())
            # Each camera's quick frames answered, so what is in flight is its slow frame and the slow
            # call alone: all four on their pods before SIGTERM (a count that included a quick frame or
            # a unary call could let SIGTERM come before a slow frame reached the gateway).
            wait_until(lambda: all(camera.answers.qsize() >= 3 for camera in cameras), "the cameras' quick frames")
            wait_until(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_inflight") >= 4,
                       "the frames and the slow call on their pods")
            callers = [pool.submit(call_until_refused) for _ in range(2)]
            wait_until(lambda: unary.qsize() >= 2, "the unary calls running")
            os.killpg(gateway.process.pid, signal.SIGTERM)
            assert gateway.process.wait(timeout=30) == 0
            stopping.set()
            for caller in callers:
                caller.result(timeout=30)
            assert slow_call.result(timeout=30) == [2.0]
        outcomes = []
        while not unary.empty():
            outcomes.append(unary.get())
        assert set(outcomes) <= {"OK", "StatusCode.UNAVAILABLE"}, outcomes
        for index, camera in enumerate(cameras):
            answers = [camera.answers.get(timeout=10) for _ in range(5)]
            assert [error for _, error in answers[:4]] == [None] * 4, answers
            assert answers[3][0].get_response().id == f"{index}-in-flight"
            assert answers[4][0] is None and "StatusCode.UNAVAILABLE" in str(answers[4][1].status()), answers[4]
            camera.close()
    finally:
        gateway.stop()


def test_a_rolling_restart_under_load_fails_no_request(fault_fleet, tmp_path):
    """What `helm upgrade` does: each server in turn gets SIGTERM, exits, starts again on its address,
    and the next one goes once the gateway sends this one requests again. Two of the three here, for
    the suite's time (bench/faults/run.py rolls all three); a server that is stopping refuses requests
    with UNAVAILABLE "Server is stopping", which the gateway must retry on another."""
    with GatewayProcess([s.grpc_url for s in fault_fleet], tmp_path / "gateway.log") as gateway:
        load = ChildLoad(gateway.url)
        try:
            answered_more(load, 30, "before the restarts")
            for server in fault_fleet[:2]:
                server.restart()
                served = metric(gateway.metrics_url, "tritonfleet_gateway_requests_total", backend=server.grpc_url,
                                code="OK")
                wait_until(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_requests_total",
                                          backend=server.grpc_url, code="OK") > served + 5,
                           f"{server.name} taking requests again after its restart")
        finally:
            outcomes = load.stop()
    assert not failures(outcomes), outcomes
