"""Resilience: a killed pod under load, a frozen one, a model unloaded on one pod, admin calls applied
to every pod, the per-pod in-flight limit, and the drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.gateway.helpers import TEST_REPOSITORY, GatewayProcess, add_one_inputs, served_counts
from tests.gateway.polling import metric, served_since, wait_for
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
        assert sum(served_since([a, b], "add_one", before, 90)) == 90
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
            # A second: a gateway that a loaded machine leaves unscheduled for longer than the
            # deadline reads the call and the client's reset together and cannot tell it was late.
            client.infer("slow", slow_inputs(3000), client_timeout=1.0)
        assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        # The gateway counts it as DEADLINE_EXCEEDED (the deadline went upstream with the request),
        # once the client's reset or the pod's answer has reached it: a moment after the client gave up.
        assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_requests_total", model="slow",
                                       code="DEADLINE_EXCEEDED") == 1, timeout=10)
        client.close()


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
    if not wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_inflight") >= count, timeout):
        raise AssertionError(f"fewer than {count} requests in flight after {timeout} s")


def test_drain_grace_s_bounds_how_long_sigterm_waits_for_calls_in_flight(explicit_fleet, tmp_path):
    """With `drain_grace_s` 0.5, a call that needs 6 s more is not waited for: the gateway ends it and
    exits. (test_sigterm_drains... shows the calls that fit in the grace finishing.)"""
    gateway = GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log",
                             env={"TRITONFLEET_GATEWAY_DRAIN_GRACE_S": "0.5"})
    try:
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(infer_once, gateway.url, "slow", slow_inputs(6000))
            wait_for_inflight(gateway, 1)
            os.killpg(gateway.process.pid, signal.SIGTERM)
            assert gateway.process.wait(timeout=15) == 0
            assert call.done() or wait_for(call.done, timeout=5), "the client was left waiting"
            with pytest.raises(InferenceServerException) as cut:
                call.result()
        assert cut.value.status() == "StatusCode.UNAVAILABLE", cut.value
        assert "gateway draining" in (tmp_path / "gateway.log").read_text()
    finally:
        gateway.stop()


def test_the_retry_budget_limits_retries(explicit_fleet, tmp_path):
    """A budget of one retry (no tokens earned per request): of the requests that meet a pod without
    the model, the first is retried on another pod and the next one gets the pod's own error."""
    a, b, c = explicit_fleet
    env = {"TRITONFLEET_GATEWAY_RETRY_BUDGET_RATIO": "0", "TRITONFLEET_GATEWAY_RETRY_BUDGET_RESERVE": "1",
           # No health check after the first: only the requests themselves find the model gone.
           "TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "600"}
    with GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log", env=env) as gateway:
        assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_backend_model_ready",
                                       model="add_one") == 3)
        for server in (a, b):
            grpcclient.InferenceServerClient(server.grpc_url).unload_model("add_one")
        try:
            failures = infer_many(gateway.url, 12)
            retries = metric(gateway.metrics_url, "tritonfleet_gateway_retries_total", model="add_one")
        finally:
            for server in (a, b):
                grpcclient.InferenceServerClient(server.grpc_url).load_model("add_one")
    assert retries == 1 and len(failures) == 1, (retries, [str(f) for f in failures])
    # The pod's own answer, passed on: Triton says NOT_FOUND for a model it has unloaded.
    assert failures[0].status() == "StatusCode.NOT_FOUND" and "add_one" in failures[0].message(), failures[0]


def test_a_slow_pod_gets_few_requests_once_the_fleet_is_loaded(explicit_fleet, tmp_path):
    """One pod's `slow` model made 40 ms slower (reloaded with another delay_ms): with 8 requests in
    flight on one channel the gateway sends it only its first answers, the ones that measure it, and
    probes; an even split would give it a third."""
    a, b, c = explicit_fleet
    direct = grpcclient.InferenceServerClient(c.grpc_url)
    config = direct.get_model_config("slow", as_json=True)["config"]
    config["parameters"]["delay_ms"]["string_value"] = "40"
    direct.load_model("slow", config=json.dumps(config))
    try:
        with GatewayProcess([s.grpc_url for s in explicit_fleet], tmp_path / "gateway.log") as gateway:
            before = served_counts(explicit_fleet, "slow")
            closed_loop(gateway.url, concurrency=8, total=600)
            deltas = served_since(explicit_fleet, "slow", before, 600)
    finally:
        direct.load_model("slow")  # back to the repository's config
        direct.close()
    assert sum(deltas) == 600, deltas
    assert deltas[2] / 600 < 0.10 and min(deltas[:2]) / 600 > 0.40, deltas


def closed_loop(url: str, concurrency: int, total: int) -> None:
    """`total` requests of `slow` (no extra delay), `concurrency` at a time, on one channel."""
    async def run():
        async with aioclient.InferenceServerClient(url) as client:
            tensor = aioclient.InferInput("INPUT0", [3], "FP32")
            tensor.set_data_from_numpy(np.ones(3, dtype=np.float32))
            left = [total]

            async def worker():
                while left[0] > 0:
                    left[0] -= 1
                    await client.infer("slow", [tensor])

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(run())


class Load:
    """`workers` clients sending add_one one request at a time until stopped; every failure is kept."""

    def __init__(self, url: str, workers: int = 3):
        self.url = url
        self.sent = [0] * workers
        self.failures: list = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(workers)]
        for thread in self.threads:
            thread.start()

    def _run(self, worker: int) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        while not self.stopping.is_set() and self.sent[worker] < 5000:
            try:
                client.infer("add_one", add_one_inputs())
            except InferenceServerException as exc:
                self.failures.append(exc)
            self.sent[worker] += 1
        client.close()

    def total(self) -> int:
        return sum(self.sent)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def test_a_killed_pod_under_load_fails_no_retryable_request_ends_its_sequences_and_is_readmitted(
        triton_fleet, tmp_path):
    servers = triton_fleet(3, repo=TEST_REPOSITORY)
    urls = [s.grpc_url for s in servers]
    with GatewayProcess(urls, tmp_path / "gateway.log") as gateway:
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
        assert wait_for(lambda: sum(served_counts(servers, "running_sum")) == 6), "statistics never caught up"
        before = served_counts(servers, "running_sum")
        victim = max(range(3), key=lambda i: before[i])

        # Slow calls on every pod, the victim included, when it dies: they had no answer yet, so they
        # are retried on another pod (and its connection's failure ejects it).
        slow_calls = ThreadPoolExecutor(6)
        slow_results = [slow_calls.submit(infer_once, gateway.url, "slow", slow_inputs(3000)) for _ in range(6)]
        assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_inflight", backend=urls[victim]) >= 1), \
            "no call waited on the pod about to be killed"
        load = Load(gateway.url)
        assert wait_for(lambda: load.total() >= 60), "the load never got going"
        os.killpg(servers[victim].process.pid, signal.SIGKILL)
        servers[victim].process.wait(timeout=10)
        at_kill = load.total()
        assert wait_for(lambda: load.total() >= at_kill + 300, timeout=60), "the load stalled after the kill"
        load.stop()
        assert not load.failures, load.failures[:3]
        assert [r.result() for r in slow_results] == [[2.0]] * 6
        slow_calls.shutdown()
        # The counters say what happened: the pod was ejected, its calls retried elsewhere.
        assert metric(gateway.metrics_url, "tritonfleet_gateway_ejections_total", backend=urls[victim]) >= 1
        assert metric(gateway.metrics_url, "tritonfleet_gateway_retries_total", model="slow") >= 1

        for sequence_id in range(1, 7):
            step(sequence_id, end=True)  # ended sequences let the servers shut down at once
        stream.stop_stream()
        outcomes = []
        while not answers.empty():
            outcomes.append(answers.get())
        errors = [str(error) for _, error in outcomes if error is not None]
        going_on = [float(result.as_numpy("SUM").reshape(-1)[0]) for result, error in outcomes if error is None]
        wait_until_gone(servers[victim].process.pid)

        # The pod comes back on its address: after its ejection's backoff, a passing health check
        # readmits it and it takes requests again.
        servers[victim].restart()
        assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_backend_up",
                                       backend=urls[victim]) == 1, timeout=30), "the restarted pod was not readmitted"
        assert not infer_many(gateway.url, 30)
        assert served_counts([servers[victim]], "add_one")[0] >= 5
    # Sequences on the killed pod end with a clear error, when it is lost and again at their next
    # message; the others carry on with their state.
    lost = {int(re.search(r"sequence (\d+)", message).group(1)) for message in errors}
    assert len(lost) == before[victim] and going_on == [2.0] * (6 - before[victim]), (errors, going_on)
    assert all("was lost" in message for message in errors), errors
    ejected = [json.loads(line) for line in (tmp_path / "gateway.log").read_text().splitlines()
               if '"backend ejected"' in line]
    assert any(entry.get("backend") == urls[victim] and "backoff_s" in entry for entry in ejected), ejected


def infer_once(url: str, model: str, inputs) -> list:
    client = grpcclient.InferenceServerClient(url)
    try:
        return client.infer(model, inputs, client_timeout=60).as_numpy("OUTPUT0").tolist()
    finally:
        client.close()


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
    another pod, instead of leaving them hanging until the client's deadline (30 s here)."""
    servers = triton_fleet(2, repo=TEST_REPOSITORY)
    frozen_url = servers[0].grpc_url
    keepalive = {"TRITONFLEET_GATEWAY_KEEPALIVE_TIME_S": "0.5", "TRITONFLEET_GATEWAY_KEEPALIVE_TIMEOUT_S": "0.5"}
    with GatewayProcess([s.grpc_url for s in servers], tmp_path / "gateway.log", env=keepalive) as gateway:
        assert not infer_many(gateway.url, 20)
        answered = [0, 0]
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
                    answered[worker] += 1
                    answered_after_freeze[worker] += frozen.is_set()
            client.close()

        workers = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for worker in workers:
            worker.start()
        assert wait_for(lambda: min(answered) >= 10), answered
        os.kill(servers[0].process.pid, signal.SIGSTOP)
        try:
            frozen.set()
            # The calls that waited on the frozen pod were handed to the other one (the ping's
            # timeout ejected the pod), and both callers went on being answered.
            assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_ejections_total",
                                           backend=frozen_url) >= 1, timeout=20), "the frozen pod was never dropped"
            assert wait_for(lambda: min(answered_after_freeze) >= 10, timeout=20), answered_after_freeze
            stopping.set()
            for worker in workers:
                worker.join(timeout=60)
        finally:
            os.kill(servers[0].process.pid, signal.SIGCONT)
        # A call left hanging on the frozen pod would have ended at its 30 s deadline, a failure.
        assert not failures, failures[:3]
        log = (tmp_path / "gateway.log").read_text()
        assert "did not answer a PING within 0.5 s" in log, log[-2000:]
