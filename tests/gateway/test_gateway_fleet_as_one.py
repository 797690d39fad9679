"""The fleet answers as one Triton server (issue #16), against real Triton servers in explicit model-control
mode behind a real gateway: statistics summed as perf_analyzer reads them, model loads and unloads
rolled out without touching other models, a poison load stopped at the first pod, one repository
index, consistent metadata, and the standard gRPC health service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading

import grpc
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.chart.chart_render import one, render
from tests.gateway.helpers import TEST_REPOSITORY, GatewayProcess, add_one_inputs
from tests.gateway.polling import wait_for
from tritonfleet.chart_runner import ChartRun
from tritonfleet.triton_server import start_fleet, stop_all

pytestmark = pytest.mark.slow
EXPLICIT = ["--model-control-mode=explicit", "--load-model=*"]
# A backend Triton does not have: loading the model fails on the pod that tries, which then says its
# server is not ready (strict readiness) for as long as it runs.
POISON_CONFIG = 'name: "poison"\nbackend: "no_such_backend"\n'


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """A copy of the test repository, so that a test can add a model directory to it."""
    path = tmp_path_factory.mktemp("repository") / "models"
    shutil.copytree(TEST_REPOSITORY, path)
    return path


@pytest.fixture(scope="module")
def fleet(repository, tmp_path_factory):
    servers = start_fleet(3, repository, tmp_path_factory.mktemp("fleet"), extra_args=EXPLICIT)
    yield servers
    stop_all(servers)


@pytest.fixture(scope="module")
def gateway(fleet, tmp_path_factory):
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with GatewayProcess([s.grpc_url for s in fleet], log, "--allow-admin") as process:
        process.log = log
        yield process


def client_of(url: str) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url)


def stub_of(url: str) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))


# ---- statistics, as perf_analyzer reads them ----------------------------------------------------

def statistics_snapshot(url: str, model: str) -> dict:
    """What perf_analyzer keeps of a ModelStatistics answer (its before and after snapshots): per
    version, the counts and durations, and the batch statistics per batch size."""
    with client_of(url) as client:
        answer = client.get_inference_statistics(model, as_json=True)
    snapshot = {}
    for entry in answer["model_stats"]:
        figures = {"inference_count": int(entry.get("inference_count", 0)),
                   "execution_count": int(entry.get("execution_count", 0))}
        for name, duration in entry.get("inference_stats", {}).items():
            figures[f"{name}.count"] = int(duration.get("count", 0))
            figures[f"{name}.ns"] = int(duration.get("ns", 0))
        for batch in entry.get("batch_stats", []):
            for name in ("compute_input", "compute_infer", "compute_output"):
                for unit in ("count", "ns"):
                    figures[f"batch{batch['batch_size']}.{name}.{unit}"] = int(batch.get(name, {}).get(unit, 0))
        nonzero = {name: value for name, value in figures.items() if value}
        snapshot[(entry["name"], entry["version"])] = (nonzero, int(entry.get("last_inference", 0)))
    return snapshot


def summed(snapshots: list[dict]) -> dict:
    """The pods' own snapshots added up, figure by figure, with the latest last inference."""
    total: dict = {}
    for snapshot in snapshots:
        for key, (figures, last) in snapshot.items():
            sums, latest = total.get(key, ({}, 0))
            total[key] = ({name: sums.get(name, 0) + figures.get(name, 0) for name in sums.keys() | figures.keys()},
                          max(latest, last))
    return total


def inferences(snapshot: dict, figure: str = "inference_count", model: str = "add_one") -> int:
    figures, _ = snapshot.get((model, "1"), ({}, 0))
    return figures.get(figure, 0)


def test_statistics_through_the_gateway_are_the_sum_of_the_pods(fleet, gateway):
    requests = 60
    before = statistics_snapshot(gateway.url, "add_one")
    pods_before = [statistics_snapshot(s.grpc_url, "add_one") for s in fleet]
    with client_of(gateway.url) as client:
        for _ in range(requests):
            client.infer("add_one", add_one_inputs())

    def pods_counted() -> int:
        now = [statistics_snapshot(s.grpc_url, "add_one") for s in fleet]
        return sum(inferences(after) - inferences(was) for was, after in zip(pods_before, now))

    # A pod counts a request in its statistics a moment after answering it.
    assert wait_for(lambda: pods_counted() == requests)
    after = statistics_snapshot(gateway.url, "add_one")
    pods_after = [statistics_snapshot(s.grpc_url, "add_one") for s in fleet]
    # The traffic was spread, so one pod's figures would not do.
    per_pod = [inferences(a) - inferences(b) for b, a in zip(pods_before, pods_after)]
    assert sum(1 for served in per_pod if served) >= 2, per_pod
    assert after == summed(pods_after)
    for figure in ("inference_count", "success.count", "execution_count"):
        assert inferences(after, figure) - inferences(before, figure) == requests, figure


def test_statistics_of_a_model_no_pod_has_get_tritons_own_error(gateway):
    with client_of(gateway.url) as client, pytest.raises(InferenceServerException) as missing:
        client.get_inference_statistics("no_such_model")
    assert missing.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "no_such_model" in missing.value.message()


# ---- model lifecycle ----------------------------------------------------------------------------

def test_loading_and_unloading_one_model_in_a_loop_leaves_another_unharmed(fleet, gateway):
    answered, failures, stop = [0], [], threading.Event()

    def traffic():
        with client_of(gateway.url) as client:
            while not stop.is_set():
                try:
                    client.infer("add_one", add_one_inputs())
                    answered[0] += 1
                except InferenceServerException as exc:
                    failures.append(f"{exc.status()}: {exc.message()}")

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        with client_of(gateway.url) as admin:
            for _ in range(3):
                admin.unload_model("slow")
                assert wait_for(lambda: not admin.is_model_ready("slow"))
                admin.load_model("slow")
                for server in fleet:
                    with client_of(server.grpc_url) as direct:
                        assert direct.is_model_ready("slow")
            during = answered[0]
    finally:
        stop.set()
        sender.join()
    assert failures == [], failures[:5]
    assert during > 0


def test_a_load_reports_every_pods_outcome(fleet, gateway):
    channel = grpc.insecure_channel(gateway.url)
    _, call = service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad.with_call(
        service_pb2.RepositoryModelLoadRequest(model_name="countdown"), timeout=120)
    outcomes = dict(call.trailing_metadata())["tritonfleet-rollout"]
    assert outcomes == ", ".join(f"{address}: ok" for address in sorted(s.grpc_url for s in fleet))
    channel.close()


def test_a_poison_load_stops_at_the_first_pod(fleet, gateway, repository):
    poison = repository / "poison"
    (poison / "1").mkdir(parents=True)
    (poison / "config.pbtxt").write_text(POISON_CONFIG)
    try:
        with client_of(gateway.url) as client:
            with pytest.raises(InferenceServerException) as failed:
                client.load_model("poison")
        first, *others = sorted(fleet, key=lambda s: s.grpc_url)
        message = failed.value.message()
        assert f"failed on {first.grpc_url} and stopped there" in message, message
        assert f"{first.grpc_url}: failed (" in message
        for other in others:
            assert f"{other.grpc_url}: not sent" in message, message
        # Only the first pod tried: its index has the failure, the others list the model as never loaded.
        states = {}
        for server in fleet:
            index = stub_of(server.grpc_url).RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=10)
            states[server.grpc_url] = next(m.state for m in index.models if m.name == "poison")
        assert states == {first.grpc_url: "UNAVAILABLE", **{o.grpc_url: "" for o in others}}
        for other in others:
            assert "poison" not in other.log_path.read_text()
        assert "model rollout failed" in gateway.log.read_text()
        # Triton's strict readiness now says the first pod's server is not ready; it still serves add_one.
        with client_of(first.grpc_url) as direct:
            assert not direct.is_server_ready() and direct.is_model_ready("add_one")
        before = inferences(statistics_snapshot(first.grpc_url, "add_one"))
        with client_of(gateway.url) as client:
            for _ in range(30):
                client.infer("add_one", add_one_inputs())
        assert wait_for(lambda: inferences(statistics_snapshot(first.grpc_url, "add_one")) > before)
    finally:
        shutil.rmtree(poison)


# ---- one index, one answer ----------------------------------------------------------------------

def index_of(url: str, **request) -> list[tuple[str, str, str, str]]:
    reply = stub_of(url).RepositoryIndex(service_pb2.RepositoryIndexRequest(**request), timeout=30)
    return [(m.name, m.version, m.state, m.reason) for m in reply.models]


def test_the_repository_index_lists_each_model_once_when_pods_differ(fleet, gateway):
    odd = fleet[1]
    with client_of(odd.grpc_url) as direct:
        direct.unload_model("running_sum")
        try:
            assert wait_for(lambda: ("running_sum", "1", "UNAVAILABLE") in [e[:3] for e in index_of(odd.grpc_url)])
            index = index_of(gateway.url)
            names = [name for name, *_ in index]
            assert names == sorted(set(names)) == ["add_one", "countdown", "refuse_when_asked", "running_sum", "slow"]
            running_sum = next(entry for entry in index if entry[0] == "running_sum")
            assert running_sum[:3] == ("running_sum", "1", "READY")
            assert running_sum[3].startswith("READY on 2 of 3 pods"), running_sum
            assert odd.grpc_url in running_sum[3]  # the reason it gave (unloaded), with its address
            assert [e[0] for e in index_of(gateway.url, ready=True)] == names
        finally:
            direct.load_model("running_sum")


def test_a_model_loaded_on_one_pod_only_is_listed_once(fleet, gateway, repository):
    """The other pods never loaded it, so they list it without a version; it is still one model."""
    fresh = repository / "fresh"
    shutil.copytree(repository / "add_one", fresh)
    (fresh / "config.pbtxt").write_text((fresh / "config.pbtxt").read_text().replace('"add_one"', '"fresh"'))
    first = fleet[0]
    try:
        with client_of(first.grpc_url) as direct:
            direct.load_model("fresh")
        assert ("fresh", "", "", "") in index_of(fleet[1].grpc_url)
        entries = [e for e in index_of(gateway.url) if e[0] == "fresh"]
        assert len(entries) == 1 and entries[0][:3] == ("fresh", "1", "READY"), entries
        assert entries[0][3] == "READY on 1 of 3 pods", entries
    finally:
        with client_of(first.grpc_url) as direct:
            direct.unload_model("fresh")
        shutil.rmtree(fresh)


def test_model_config_is_the_first_pods_and_a_differing_pod_is_logged(fleet, gateway):
    first, *others = sorted(fleet, key=lambda s: s.grpc_url)
    differing = others[-1]
    with client_of(differing.grpc_url) as direct:
        config = direct.get_model_config("running_sum", as_json=True)["config"]
        config["parameters"] = {"variant": {"string_value": "other"}}
        direct.load_model("running_sum", config=json.dumps(config))
        try:
            with client_of(gateway.url) as client, client_of(first.grpc_url) as reference:
                for _ in range(3):  # whichever pod the call would have been balanced to
                    assert client.get_model_config("running_sum", as_json=True) == \
                        reference.get_model_config("running_sum", as_json=True)
                assert client.get_server_metadata(as_json=True) == reference.get_server_metadata(as_json=True)
            assert wait_for(lambda: any(
                '"pods answer differently"' in line and differing.grpc_url in line and "ModelConfig" in line
                for line in gateway.log.read_text().splitlines()))
        finally:
            direct.load_model("running_sum")


def test_a_live_pod_that_does_not_answer_fails_the_index_and_the_statistics(fleet, tmp_path):
    """Frozen after the gateway's first health round (the next is a minute away): the gateway still
    counts it live, asks it, and names it instead of answering without its models."""
    env = {"TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "60"}
    with GatewayProcess([s.grpc_url for s in fleet], tmp_path / "gateway.log", env=env) as process:
        frozen = fleet[2]
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(grpc.RpcError) as index:
                index_of(process.url)
            assert index.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"RepositoryIndex failed on backend {frozen.grpc_url}" in index.value.details()
            with client_of(process.url) as client, pytest.raises(InferenceServerException) as stats:
                client.get_inference_statistics("add_one", client_timeout=30)
            assert stats.value.status() == "StatusCode.UNAVAILABLE"
            assert frozen.grpc_url in stats.value.message()
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)


# ---- grpc.health.v1.Health ----------------------------------------------------------------------

def health_check(url: str, service: str = "") -> int:
    with grpc.insecure_channel(url) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10).status


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_the_health_service_through_the_gateway_says_serving(gateway):
    assert health_check(gateway.url) == SERVING
    assert health_check(gateway.url, "inference.GRPCInferenceService") == SERVING
    assert health_check(gateway.url, "liveness") == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        health_check(gateway.url, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_charts_gateway_probes_pass_against_the_gateway(gateway):
    container = one(render(None), "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]["grpc"]
        # As the kubelet would ask, on the gateway's port here instead of the pod's.
        assert ChartRun._grpc_health("127.0.0.1", gateway.port, 5.0, probe.get("service", "")), kind  # noqa: SLF001


def test_the_health_service_says_not_serving_when_every_pod_is_gone(tmp_path):
    repository = tmp_path / "models"
    shutil.copytree(TEST_REPOSITORY / "add_one", repository / "add_one")
    servers = start_fleet(1, repository, tmp_path / "fleet")
    try:
        with GatewayProcess([s.grpc_url for s in servers], tmp_path / "gateway.log") as process:
            assert health_check(process.url) == SERVING
            stop_all(servers)
            assert wait_for(lambda: health_check(process.url) == NOT_SERVING)
            assert health_check(process.url, "inference.GRPCInferenceService") == NOT_SERVING
            with client_of(process.url) as client:
                assert not client.is_server_ready()
            assert health_check(process.url, "liveness") == SERVING
    finally:
        stop_all(servers)


def test_a_watch_hears_not_serving_when_the_gateway_drains(fleet, tmp_path):
    with GatewayProcess([s.grpc_url for s in fleet], tmp_path / "gateway.log",
                        env={"TRITONFLEET_GATEWAY_DRAIN_GRACE_S": "30"}) as process:
        channel = grpc.insecure_channel(process.url)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        statuses = iter(watch)
        assert next(statuses).status == SERVING
        os.kill(process.process.pid, signal.SIGTERM)
        assert next(statuses).status == NOT_SERVING
        watch.cancel()
        channel.close()
