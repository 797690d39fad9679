"""Assertions on the template branches (helm-unittest style, over rendered YAML), and values the
schema or the templates must refuse with a clear message."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from observability.render import dashboard_files, rule_groups
from tritonfleet.cli import build_parser
from tests.chart.chart_render import CHART, OPERATOR_APIS, by_kind, one, render, render_error

CI = CHART / "ci"
REPO_ROOT = CHART.parents[1]


def triton_container(objects) -> dict:
    return one(objects, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]


def test_cpu_defaults_request_no_gpu_and_mount_a_sized_shm():
    objects = render(str(CI / "cpu-values.yaml"))
    container = triton_container(objects)
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert "--allow-gpu-metrics=false" in container["args"]
    volumes = {v["name"]: v for v in one(objects, "Deployment", "triton")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert {"mountPath": "/dev/shm", "name": "dshm"} in container["volumeMounts"]
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_gpu_values_request_gpus_on_gpu_nodes():
    objects = render(str(CI / "gpu-values.yaml"))
    container = triton_container(objects)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["memory"] == "32Gi"
    assert "--allow-gpu-metrics=true" in container["args"]
    spec = one(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_mps_starts_its_daemon_before_triton_and_points_every_process_at_it():
    """With the model instances under CUDA MPS, their processes share the GPU at once (an H200 answered
    90 cameras at 1,947-1,981 frames/s with it, 1,565 without: docs/BENCHMARKS.md)."""
    container = triton_container(render(str(CI / "gpu-values.yaml"), sets=("triton.gpu.mps.enabled=true",)))
    assert container["command"][:2] == ["sh", "-c"]
    assert container["command"][2].startswith("nvidia-cuda-mps-control -d && exec tritonserver")
    assert container["args"][0] == "tritonserver"  # $0 of the shell; tritonserver's own flags follow
    assert any(a.startswith("--model-repository=") for a in container["args"][1:])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CUDA_MPS_PIPE_DIRECTORY"].startswith("/cache/") and env["CUDA_MPS_LOG_DIRECTORY"].startswith("/cache/")
    plain = triton_container(render(str(CI / "gpu-values.yaml")))
    assert plain["command"] == ["tritonserver"] and "CUDA_MPS_PIPE_DIRECTORY" not in {e["name"] for e in plain["env"]}
    assert "triton.gpu.mps needs triton.gpu.enabled" in render_error("triton.gpu.mps.enabled=true")


def test_pvc_repository_is_mounted_read_only_and_dns_discovery_needs_no_rbac():
    objects = render(str(CI / "pvc-values.yaml"))
    spec = one(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"] == {"claimName": "triton-models", "readOnly": True}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/mnt/models", "readOnly": True, "subPath": "repository"}
    assert "--model-repository=/mnt/models" in spec["containers"][0]["args"]
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")


def test_object_storage_repository_is_fetched_by_an_init_container():
    objects = render(str(CI / "objectstorage-values.yaml"))
    spec = one(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["command"][:3] == ["aws", "s3", "sync"]
    assert "s3://example-models/tritonfleet" in init["command"]
    assert init["envFrom"] == [{"secretRef": {"name": "model-bucket-credentials"}}]


def test_gateway_mode_gets_rbac_for_endpointslices():
    objects = render(None)
    role = one(objects, "Role")
    assert role["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                              "verbs": ["get", "list", "watch"]}]
    binding = one(objects, "RoleBinding")
    gateway = one(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == gateway["serviceAccountName"]
    assert gateway["automountServiceAccountToken"] is True
    assert gateway["containers"][0]["command"][:2] == ["tritonfleet", "gateway"]


def test_envoy_mode_renders_a_config_the_real_envoy_accepts(tmp_path):
    objects = render(str(CI / "envoy-values.yaml"))
    assert not by_kind(objects, "Role")
    deployment = one(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    assert deployment["containers"][0]["name"] == "envoy"
    assert deployment["automountServiceAccountToken"] is False
    envoy_yaml = one(objects, "ConfigMap", "gateway")["data"]["envoy.yaml"]
    envoy_config = yaml.safe_load(envoy_yaml)
    source = yaml.safe_load((REPO_ROOT / "deploy/envoy/envoy.yaml").read_text())
    # The chart serves deploy/envoy/envoy.yaml with only names and ports changed, plus the metrics listener.
    grpc = envoy_config["static_resources"]["listeners"][0]
    assert grpc["filter_chains"] == source["static_resources"]["listeners"][0]["filter_chains"]
    assert [l["name"] for l in envoy_config["static_resources"]["listeners"]] == ["grpc", "metrics"]
    cluster, source_cluster = envoy_config["static_resources"]["clusters"][0], source["static_resources"]["clusters"][0]
    assert {k: v for k, v in cluster.items() if k != "load_assignment"} == \
        {k: v for k, v in source_cluster.items() if k != "load_assignment"}
    envoy = pytest.importorskip("envoy")
    binary = Path(envoy.__file__).parent / "_bin" / "envoy"
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_yaml)
    result = subprocess.run([str(binary), "--mode", "validate", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_hpa_scales_triton_on_the_per_pod_queue_metric():
    objects = render(str(CI / "hpa-values.yaml"))
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment", "triton")["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "tritonfleet_pending_requests"
    assert "replicas" not in one(objects, "Deployment", "triton")["spec"]
    assert not by_kind(objects, "ScaledObject")


def test_keda_scales_on_the_whole_queue_divided_per_pod():
    objects = render(str(CI / "keda-values.yaml"))
    scaled = one(objects, "ScaledObject")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "8"
    assert trigger["metadata"]["query"].startswith("sum(nv_inference_pending_request_count{")
    assert 'namespace="inference"' in trigger["metadata"]["query"]
    assert not by_kind(objects, "HorizontalPodAutoscaler")


def test_network_policy_admits_only_the_gateway_and_prometheus():
    objects = render(str(CI / "networkpolicy-values.yaml"))
    policy = one(objects, "NetworkPolicy")
    gateway_labels = one(objects, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    first, second = policy["spec"]["ingress"]
    assert first["from"][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert {p["port"] for p in first["ports"]} == {"grpc"}  # HTTP is the kubelet's, for probes
    assert {p["port"] for p in second["ports"]} == {"metrics"}
    assert "namespaceSelector" in second["from"][0]


def test_prometheus_operator_objects_follow_crd_detection():
    without = render(None)
    assert not by_kind(without, "ServiceMonitor") and not by_kind(without, "PrometheusRule")
    detected = render(None, api_versions=OPERATOR_APIS)
    monitors = by_kind(detected, "ServiceMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {"triton", "gateway"}
    annotations = one(detected, "Deployment", "triton")["spec"]["template"]["metadata"].get("annotations") or {}
    assert "prometheus.io/scrape" not in annotations


def test_operator_values_label_monitors_for_the_release_and_ship_the_generated_rules():
    objects = render(str(CI / "operator-values.yaml"))
    for kind in ("ServiceMonitor", "PrometheusRule", "PodMonitor"):
        for obj in by_kind(objects, kind):
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
            assert obj["metadata"]["labels"]["team"] == "inference", kind
    rule = one(objects, "PrometheusRule")
    assert rule["spec"] == rule_groups()
    jobs = {m["spec"]["endpoints"][0]["relabelings"][0]["replacement"] for m in by_kind(objects, "ServiceMonitor")}
    assert jobs == {"triton", "gateway"}  # the job names the rules select on
    job = one(objects, "Job", "loadtest")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["tritonfleet", "loadtest"]
    assert container["args"][:3] == ["video", "--url=fleet-tritonfleet-gateway.inference.svc.cluster.local:8001", "--metrics-port=9102"]
    # The real CLI accepts the Job's and the gateway's command lines.
    parser = build_parser()
    assert parser.parse_args(container["command"][1:] + container["args"]).workload == "video"
    gateway = one(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert parser.parse_args(gateway["command"][1:]).config == "/etc/tritonfleet/gateway.yaml"
    config = yaml.safe_load(one(objects, "ConfigMap", "gateway")["data"]["gateway.yaml"])
    assert config["retry_attempts"] == 2 and config["max_inflight_per_backend"] == 64
    assert "data_plane" not in config  # one data plane: the option is gone


def test_the_gateway_edge_limits_are_values_the_gateway_accepts(tmp_path):
    from gateway import config

    objects = render(None, sets=("gateway.edge.maxMessageBytes=1048576", "gateway.edge.maxConnectionAgeSeconds=600",
                                 "gateway.edge.clientKeepaliveTimeoutSeconds=3"))
    rendered = tmp_path / "gateway.yaml"
    rendered.write_text(one(objects, "ConfigMap", "gateway")["data"]["gateway.yaml"])
    loaded = config.load(rendered, environ={})  # the gateway's own loader
    assert (loaded.max_message_bytes, loaded.max_connection_age_s, loaded.client_keepalive_timeout_s) == (1048576, 600, 3)
    assert (loaded.max_buffered_bytes, loaded.max_concurrent_streams, loaded.client_idle_timeout_s) == (1 << 30, 1000, 300)


def test_dashboards_ship_as_labelled_config_maps_with_the_generated_json():
    objects = render(None)
    maps = [m for m in by_kind(objects, "ConfigMap") if m["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {key: value for m in maps for key, value in m["data"].items()}
    assert {k: json.loads(v) for k, v in shipped.items()} == {k: json.loads(v) for k, v in dashboard_files().items()}
    assert not [m for m in by_kind(render(None, sets=("monitoring.dashboards.enabled=false",)), "ConfigMap")
                if "grafana_dashboard" in m["metadata"]["labels"]]


def test_helm_test_pod_runs_an_inference_through_the_gateway():
    pod = one(render(None), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][2]
    assert "fleet-tritonfleet-gateway.inference.svc.cluster.local:8001" in script
    assert 'client.infer("image_preprocess"' in script
    compile(script, "helm-test", "exec")  # the inline program is valid Python


def test_explicit_model_control_loads_the_named_models_at_start():
    args = triton_container(render(str(CI / "modelcontrol-values.yaml")))["args"]
    assert "--model-control-mode=explicit" in args
    assert [a for a in args if a.startswith("--load-model=")] == [
        "--load-model=image_preprocess", "--load-model=image_classifier",
        "--load-model=image_postprocess", "--load-model=image_pipeline"]
    assert not any(a.startswith("--model-control-mode") for a in triton_container(render(None))["args"])


def test_the_gateway_hpa_scales_the_gateway_on_cpu_and_owns_its_replicas():
    objects = render(str(CI / "gateway-hpa-values.yaml"))
    hpa = one(objects, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment", "gateway")["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert "replicas" not in one(objects, "Deployment", "gateway")["spec"]
    assert not by_kind(render(None), "HorizontalPodAutoscaler")


def test_static_discovery_lists_the_backends_in_the_gateway_config():
    config_map = one(render(str(CI / "static-values.yaml")), "ConfigMap", "gateway")
    config = yaml.safe_load(config_map["data"]["gateway.yaml"])
    assert config["discovery"] == "static"
    assert config["backends"] == ["triton-a.example.internal:8001", "triton-b.example.internal:8001"]


@pytest.mark.parametrize("sets, message", [
    (("triton.modelControl.mode=poll",), "value must be one of 'none', 'explicit'"),
    (("gateway.discovery=static",), "gateway.staticBackends must list Triton host:port addresses"),
    (("gateway.autoscaling.enabled=true", "gateway.resources.requests=null"), "needs gateway.resources.requests.cpu"),
    (("gateway.mode=nginx",), "value must be one of 'gateway', 'envoy'"),
    (("triton.replicas=0",), "/triton/replicas"),
    (("triton.modelRepository.source=pvc",), "/triton/modelRepository/pvc/claimName"),
    (("triton.modelRepository.source=objectStorage",), "/triton/modelRepository/objectStorage/uri"),
    (("triton.ports.grpc=70000",), "/triton/ports/grpc"),
    (("monitoring.interval=often",), "/monitoring/interval"),
    (("tritn.replicas=2",), "additional properties 'tritn' not allowed"),
    (("gateway.config.listen=0.0.0.0:1",), "invalid propertyName 'listen'"),
    (("gateway.dataPlane=frames",), "additional properties 'dataPlane' not allowed"),
    (("gateway.edge.maxConcurrentStreams=0",), "/gateway/edge/maxConcurrentStreams"),
    (("triton.image.tag=latest",), "the tag `latest` is not reproducible"),
    (("triton.terminationGracePeriodSeconds=20",), "must exceed preStopSleepSeconds + exitTimeoutSeconds"),
])
def test_bad_values_are_refused_with_a_clear_message(sets, message):
    assert message in render_error(*sets)


def leaf_keys(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaf_keys(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def test_every_value_is_documented_in_the_chart_readme():
    from observability.chart_docs import documented_values

    text = (CHART / "values.yaml").read_text()
    documented = {key for key, _ in documented_values(text)}
    readme = (CHART / "README.md").read_text()
    missing = [leaf for leaf in leaf_keys(yaml.safe_load(text))
               if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    assert not missing, f"values without a `# --` comment: {missing}"
    assert all(f"| {key} |" in readme for key in documented)
