"""Policy and consistency over the rendered chart, for every values file in ci/: resources, probes,
pinned images, immutable selectors; the gateway's backend is the headless Service; probe, monitor and
policy ports are the containers' ports."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.chart_render import CI_VALUES, NAMESPACE, OPERATOR_APIS, by_kind, one, pod_specs, render
from tests.chart.gateway_config import parse_rendered

CASES = [pytest.param((str(p), ()), id=p.stem) for p in CI_VALUES] + [
    pytest.param((str(p), OPERATOR_APIS), id=f"{p.stem}+crds") for p in CI_VALUES]
UNSTABLE_SELECTOR_LABELS = ("helm.sh/chart", "app.kubernetes.io/version")


@pytest.fixture(params=CASES)
def objects(request):
    values_file, apis = request.param
    return render(values_file, api_versions=apis)


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def test_every_container_has_resources_and_a_pinned_image(objects):
    for name, spec in pod_specs(objects):
        for container in containers(spec):
            where = f"{name}/{container['name']}"
            resources = container.get("resources", {})
            assert resources.get("requests", {}).get("cpu") and resources["requests"].get("memory"), where
            assert resources.get("limits", {}).get("memory"), f"{where}: no memory limit"
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1], f"{where}: untagged image {image}"
            assert not image.endswith(":latest"), f"{where}: latest tag"


def test_long_running_containers_have_probes_and_run_as_non_root(objects):
    for deployment in by_kind(objects, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"].get("runAsNonRoot") is True, deployment["metadata"]["name"]
        for container in spec["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, container["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_selectors_carry_no_chart_version_and_match_their_pods(objects):
    pod_labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
                  for d in by_kind(objects, "Deployment") + by_kind(objects, "Job")}
    selectors = [(o["kind"], o["spec"]["selector"]) for o in by_kind(objects, "Service")]
    selectors += [(o["kind"], o["spec"]["selector"]["matchLabels"])
                  for o in objects if o["kind"] in ("Deployment", "PodDisruptionBudget", "ServiceMonitor", "PodMonitor")]
    for kind, selector in selectors:
        assert not set(selector) & set(UNSTABLE_SELECTOR_LABELS), f"{kind} selector {selector}"
        if kind != "PodMonitor":  # the load-test Job's pods are not a Deployment's
            matched = [n for n, labels in pod_labels.items() if selector.items() <= labels.items()]
            assert len(matched) == 1, f"{kind} selector {selector} matches {matched}"


def named_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def test_probe_ports_are_container_ports(objects):
    for name, spec in pod_specs(objects):
        for container in spec["containers"]:
            ports = named_ports(container)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    action = (container[probe].get("httpGet") or container[probe].get("tcpSocket")
                              or container[probe].get("grpc"))
                    assert action["port"] in ports or action["port"] in ports.values(), f"{name} {probe}"


def test_services_and_monitors_point_at_container_ports(objects):
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind(objects, "Deployment")}
    services = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s for s in by_kind(objects, "Service")}
    for component, service in services.items():
        if component == "loadtest":  # the load-test pods' names for one another (DNS only, no ports)
            assert "ports" not in service["spec"]
            continue
        ports = named_ports(deployments[component]["spec"]["template"]["spec"]["containers"][0])
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{component} Service port {port['name']}"
    for monitor in by_kind(objects, "ServiceMonitor"):
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        service_ports = {p["name"] for p in services[component]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports
    for monitor in by_kind(objects, "PodMonitor"):
        job = one(objects, "Job", "loadtest")
        ports = named_ports(job["spec"]["template"]["spec"]["containers"][0])
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= set(ports)


def test_scrape_annotations_name_the_metrics_port_when_there_are_no_monitors(objects):
    if by_kind(objects, "ServiceMonitor"):
        return
    for deployment in by_kind(objects, "Deployment"):
        template = deployment["spec"]["template"]
        ports = named_ports(template["spec"]["containers"][0])
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])


def test_gateway_backend_is_the_rendered_headless_service(objects):
    headless = [s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"
                and s["metadata"]["labels"]["app.kubernetes.io/component"] == "triton"]
    assert len(headless) == 1
    triton_service = headless[0]
    grpc_port = next(p["port"] for p in triton_service["spec"]["ports"] if p["name"] == "grpc")
    host = f"{triton_service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    config_map = one(objects, "ConfigMap", "gateway")
    if "gateway.yaml" in config_map["data"]:
        # The gateway's own parser accepts the rendered file.
        config = parse_rendered(config_map["data"]["gateway.yaml"])
        if config.discovery == "kubernetes":
            assert config.kubernetes_service == triton_service["metadata"]["name"]
            assert config.kubernetes_namespace == NAMESPACE
            assert config.kubernetes_port_name in {p["name"] for p in triton_service["spec"]["ports"]}
        elif config.discovery == "static":
            # A fleet outside the cluster: the values name it, not the headless Service.
            assert config.backends and all(b.rpartition(":")[2].isdigit() for b in config.backends)
        else:
            assert config.dns_target == f"{host}:{grpc_port}"
        gateway = one(objects, "Deployment", "gateway")
        ports = named_ports(gateway["spec"]["template"]["spec"]["containers"][0])
        assert config.listen_port == ports["grpc"] and config.metrics_port == ports["metrics"]
    else:
        envoy = yaml.safe_load(config_map["data"]["envoy.yaml"])
        cluster = next(c for c in envoy["static_resources"]["clusters"] if c["name"] == "triton")
        # STRICT_DNS: the classic `type`, or Envoy 1.40's DNS cluster extension that replaces it.
        dns_cluster = cluster.get("type") == "STRICT_DNS" or cluster.get("cluster_type", {}).get("name") == "envoy.clusters.dns"
        assert dns_cluster and cluster["lb_policy"] == "LEAST_REQUEST"
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert (address["address"], address["port_value"]) == (host, grpc_port)


def test_triton_grace_period_outlasts_the_drain(objects):
    triton = one(objects, "Deployment", "triton")
    spec = triton["spec"]["template"]["spec"]
    container = spec["containers"][0]
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    exit_timeout = int(next(a for a in container["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    assert spec["terminationGracePeriodSeconds"] > sleep + exit_timeout
