"""The gateway's probes: gRPC health checks against the gateway's own grpc.health.v1 service, with the
service names the gateway serves; Envoy, which serves no health service of its own, keeps TCP and HTTP."""

from __future__ import annotations

from gateway.control import readiness
from tests.chart.chart_render import CHART, one, render


def gateway_container(objects) -> dict:
    return one(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]


def test_the_gateway_is_probed_through_its_grpc_health_service():
    container = gateway_container(render(None))
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    readiness_probe, liveness_probe = container["readinessProbe"], container["livenessProbe"]
    assert readiness_probe["grpc"] == {"port": grpc_port}  # the "" service: SERVING while a pod is live
    assert liveness_probe["grpc"] == {"port": grpc_port, "service": readiness.LIVENESS}
    assert readiness.LIVENESS not in readiness.SERVED  # liveness does not follow the pods


def test_envoy_keeps_tcp_and_http_probes():
    container = gateway_container(render(str(CHART / "ci/envoy-values.yaml")))
    assert container["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/stats/prometheus", "port": "metrics"}
