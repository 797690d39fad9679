"""A client stream's messages travel on one upstream `ModelStreamInfer` stream per pod it uses
(`routing.stream_upstreams.PodStream`), against real Triton servers: a stateless message still goes to
the pod its own pick chose, and one lost with its pod is answered by another; the streams close with
the client's, and a pod told to stop (SIGTERM) is let go, since Triton does not exit while a stream
to it is open."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.gateway.helpers import TEST_REPOSITORY, GatewayProcess, StreamClient, add_one_inputs, served_counts
from tests.gateway.polling import metric, served_since, wait_for
from tests.polling import wait_until

pytestmark = pytest.mark.slow
OPEN = "tritonfleet_gateway_upstream_streams"


def slow_inputs(delay_ms: int):
    delay = grpcclient.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    return add_one_inputs([1.0]) + [delay]


@contextmanager
def stream_through_gateway(triton_fleet, tmp_path, count: int):
    """`count` servers of their own, a gateway over them and one client stream through it."""
    servers = triton_fleet(count, repo=TEST_REPOSITORY)
    with GatewayProcess([s.grpc_url for s in servers], tmp_path / "gateway.log") as gateway:
        yield servers, [s.grpc_url for s in servers], gateway, StreamClient(gateway.url)


def answers_of(stream: StreamClient, count: int, timeout: float = 60.0) -> list:
    return [stream.answers.get(timeout=timeout) for _ in range(count)]


def test_one_upstream_stream_per_pod_carries_a_client_streams_messages_and_closes_with_it(fleet3, gateway3):
    before = served_counts(fleet3, "add_one")
    stream = StreamClient(gateway3.url)
    for index in range(60):
        stream.send("add_one", add_one_inputs([index]), request_id=str(index))
    answers = answers_of(stream, 60)
    assert all(error is None for _, error in answers), [str(e) for _, e in answers if e][:3]
    served = served_since(fleet3, "add_one", before, 60)
    assert sum(served) == 60 and min(served) >= 1, served
    # While the client's stream is open: one upstream stream at each pod, for all 60 messages.
    assert [metric(gateway3.metrics_url, OPEN, backend=s.grpc_url) for s in fleet3] == [1, 1, 1]
    assert stream.close() == []
    assert wait_for(lambda: metric(gateway3.metrics_url, OPEN) == 0), "upstream streams left open"


def test_stateless_stream_messages_in_flight_on_a_killed_pod_are_answered_by_another(triton_fleet, tmp_path):
    with stream_through_gateway(triton_fleet, tmp_path, 3) as (servers, urls, gateway, stream):
        for index in range(6):
            stream.send("slow", slow_inputs(3000), request_id=f"slow-{index}")
        assert wait_for(lambda: sum(metric(gateway.metrics_url, "tritonfleet_gateway_inflight", backend=u) >= 1
                                    for u in urls) == 3), "the slow messages did not reach every pod"
        victim = servers[0]
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)
        answers = answers_of(stream, 6, timeout=90)
        assert [str(e) for _, e in answers if e is not None] == []
        assert sorted(r.get_response().id for r, _ in answers) == [f"slow-{i}" for i in range(6)]
        assert metric(gateway.metrics_url, "tritonfleet_gateway_retries_total", model="slow") >= 1
        # The stream goes on over the two pods left.
        stream.send("add_one", add_one_inputs([41.0]), request_id="after")
        result, error = stream.answers.get(timeout=30)
        assert error is None and result.as_numpy("OUTPUT0")[0] == 42.0
        assert stream.close() == []


def test_a_pod_told_to_stop_is_let_go_by_open_client_streams_and_exits(triton_fleet, tmp_path):
    with stream_through_gateway(triton_fleet, tmp_path, 2) as (servers, urls, gateway, stream):
        for index in range(20):
            stream.send("add_one", add_one_inputs([index]), request_id=str(index))
        assert all(error is None for _, error in answers_of(stream, 20))
        assert [metric(gateway.metrics_url, OPEN, backend=u) for u in urls] == [1, 1]
        victim = servers[0]
        victim.process.send_signal(signal.SIGTERM)
        # Triton waits for its open streams before it exits: the gateway's must close.
        wait_until(lambda: victim.process.poll() is not None, "the stopped server to exit", timeout=60)
        assert metric(gateway.metrics_url, OPEN, backend=urls[0]) == 0
        for index in range(20):
            stream.send("add_one", add_one_inputs([index]), request_id=f"after-{index}")
        after = answers_of(stream, 20)
        assert [str(e) for _, e in after if e is not None] == []
        assert stream.close() == []


def test_a_slow_models_messages_hold_back_no_other_models_answers(fleet3, gateway3):
    """Triton answers one stream's requests in order: one upstream stream per pod and model keeps a
    slow model's messages from holding back another model's answers on the same pod."""
    stream = StreamClient(gateway3.url)
    for index in range(3):
        stream.send("slow", slow_inputs(8000), request_id=f"slow-{index}")
    assert wait_for(lambda: metric(gateway3.metrics_url, "tritonfleet_gateway_inflight") >= 3), "slow calls not out"
    for index in range(30):
        stream.send("add_one", add_one_inputs([index]), request_id=str(index))
    first = [result.get_response().id for result, error in answers_of(stream, 30)]
    assert sorted(first) == sorted(str(index) for index in range(30)), first
    late = answers_of(stream, 3)
    assert sorted(result.get_response().id for result, _ in late) == ["slow-0", "slow-1", "slow-2"]
    assert stream.close() == []
