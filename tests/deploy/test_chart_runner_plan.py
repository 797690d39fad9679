"""What the chart runner would start for ci/local-values.yaml, read without starting anything: the
pods a cluster would run, the names its Services resolve to, and the podman arguments that carry the
pod specs' user, read-only root, capabilities and volumes."""

from __future__ import annotations

from tests.chart.chart_render import CHART, NAMESPACE, render
from tritonfleet.chart_runner import ChartRun, podman_size

LOCAL = str(CHART / "ci/local-values.yaml")


def planned(tmp_path):
    run = ChartRun(list(render(LOCAL)), NAMESPACE, workdir=tmp_path)
    pods = run.workload_pods()
    for n, pod in enumerate(pods):
        pod.ip = f"10.0.0.{n + 10}"
        run.pods.append(pod)
    return run, {p.name: p for p in pods}


def test_every_deployment_replica_is_a_pod(tmp_path):
    _, pods = planned(tmp_path)
    assert sorted(pods) == ["fleet-tritonfleet-gateway-0", "fleet-tritonfleet-triton-0", "fleet-tritonfleet-triton-1"]


def test_the_headless_service_resolves_to_every_triton_pod(tmp_path):
    run, pods = planned(tmp_path)
    entries = run.host_entries()
    host = f"fleet-tritonfleet-triton.{NAMESPACE}.svc.cluster.local"
    assert {e for e in entries if e.startswith(host + ":")} == {
        f"{host}:{pods['fleet-tritonfleet-triton-0'].ip}", f"{host}:{pods['fleet-tritonfleet-triton-1'].ip}"}
    gateway = f"fleet-tritonfleet-gateway.{NAMESPACE}.svc.cluster.local"
    assert [e for e in entries if e.startswith(gateway + ":")] == [f"{gateway}:{pods['fleet-tritonfleet-gateway-0'].ip}"]


def test_the_pod_specs_security_and_volumes_become_podman_arguments(tmp_path):
    run, pods = planned(tmp_path)
    gateway = pods["fleet-tritonfleet-gateway-0"]
    args = run.security_args(gateway, gateway.container_spec("gateway"))
    assert ["--user", "10001:10001"] == args[:2]
    assert "--read-only" in args and ["--cap-drop", "ALL"] == args[-2:]
    volumes = run.volume_args(gateway, gateway.container_spec("gateway"))
    config = tmp_path / "configmaps" / "fleet-tritonfleet-gateway"
    assert f"{config}:/etc/tritonfleet:ro" in volumes
    assert "dns_target: fleet-tritonfleet-triton.inference.svc.cluster.local:8001" in (config / "gateway.yaml").read_text()
    triton = pods["fleet-tritonfleet-triton-0"]
    volumes = run.volume_args(triton, triton.container_spec("triton"))
    assert ["--shm-size", "256m"] == volumes[:2] and "/cache:rw,mode=1777,size=1g" in volumes


def test_quantities_are_written_as_podman_sizes():
    assert [podman_size(q) for q in ("2Gi", "256Mi", "64Ki", "1000")] == ["2g", "256m", "64k", "1000"]
