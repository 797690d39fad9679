"""The chart's access layer (issue 18): TLS toward clients from a Secret or a cert-manager Certificate,
mutual TLS to the Triton pods, API keys, Triton's restricted admin protocols, the NetworkPolicy and
the containers' security contexts, over the rendered YAML; values that cannot work are refused."""

from __future__ import annotations

import base64

import pytest

from tests.chart.chart_render import CHART, by_kind, one, pod_specs, render, render_error
from tests.chart.gateway_config import parse_rendered

CI = CHART / "ci"
TLS_CI = str(CI / "tls-values.yaml")
ENVOY_TLS_CI = str(CI / "envoy-tls-values.yaml")
TLS_SECRET = ("gateway.tls.enabled=true", "gateway.tls.secretName=gw-tls")
UPSTREAM = ("gateway.upstreamTLS.enabled=true", "gateway.upstreamTLS.secretName=up-tls")
HEADLESS = "fleet-tritonfleet-triton.inference.svc.cluster.local"
RESTRICTED = "model-repository,shared-memory,trace,logging:tritonfleet-admin=$(TRITON_ADMIN_HEADER_VALUE)"


def pod_spec(objects, kind: str, component: str) -> dict:
    return one(objects, kind, component)["spec"]["template"]["spec"]


def container(spec: dict, name: str | None = None) -> dict:
    return next(c for c in spec["containers"] if name is None or c["name"] == name)


def mounts(c: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def volumes(spec: dict) -> dict[str, dict]:
    return {v["name"]: v for v in spec.get("volumes", [])}


def env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def projected_files(spec: dict) -> dict[str, tuple[str, str]]:
    """Path inside the gateway's config volume -> (Secret or ConfigMap name, key)."""
    files = {}
    for source in volumes(spec)["config"]["projected"]["sources"]:
        if "secret" in source:
            for item in source["secret"]["items"]:
                files[item["path"]] = (source["secret"]["name"], item["key"])
        else:
            files["gateway.yaml"] = (source["configMap"]["name"], "gateway.yaml")
    return files


def gateway_yaml(objects) -> str:
    return one(objects, "ConfigMap", "gateway")["data"]["gateway.yaml"]


def test_tls_from_a_secret_is_mounted_read_only_where_the_gateway_config_points():
    objects = render(None, sets=TLS_SECRET)
    spec = pod_spec(objects, "Deployment", "gateway")
    assert projected_files(spec) == {"gateway.yaml": ("fleet-tritonfleet-gateway", "gateway.yaml"),
                                     "tls/tls.crt": ("gw-tls", "tls.crt"), "tls/tls.key": ("gw-tls", "tls.key")}
    assert mounts(container(spec))["/etc/tritonfleet"]["readOnly"] is True
    text = gateway_yaml(objects)
    assert "tls_cert_file: /etc/tritonfleet/tls/tls.crt" in text and "tls_key_file: /etc/tritonfleet/tls/tls.key" in text
    assert "tls_client_ca_file" not in text and "upstream_tls" not in text
    assert not by_kind(objects, "Certificate")


def test_the_access_config_is_one_the_gateway_parser_accepts():
    config = parse_rendered(gateway_yaml(render(TLS_CI)))
    assert (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file) == (
        "/etc/tritonfleet/tls/tls.crt", "/etc/tritonfleet/tls/tls.key", "/etc/tritonfleet/tls/ca.crt")
    assert config.upstream_tls is True and config.upstream_server_name == HEADLESS
    assert config.api_keys_file == "/etc/tritonfleet/api-keys/keys.yaml"


def test_without_access_values_the_gateway_keeps_its_plain_config_map_and_grpc_probes():
    spec = pod_spec(render(None), "Deployment", "gateway")
    assert volumes(spec)["config"] == {"name": "config", "configMap": {"name": "fleet-tritonfleet-gateway"}}
    assert "grpc" in container(spec)["readinessProbe"]
    assert "tls_cert_file" not in gateway_yaml(render(None))


def test_cert_manager_writes_the_tls_secret_for_the_gateway_service_names():
    objects = render(TLS_CI)
    certificate = one(objects, "Certificate")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    svc = "fleet-tritonfleet-gateway"
    assert certificate["spec"]["dnsNames"] == [svc, f"{svc}.inference", f"{svc}.inference.svc",
                                               f"{svc}.inference.svc.cluster.local"]
    assert certificate["spec"]["issuerRef"] == {"name": "inference-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert (certificate["spec"]["duration"], certificate["spec"]["renewBefore"]) == ("2160h", "360h")
    assert "client auth" in certificate["spec"]["usages"]  # the chart's clients present it under mTLS
    secret = certificate["spec"]["secretName"]
    assert secret == "fleet-tritonfleet-gateway-tls"
    files = projected_files(pod_spec(objects, "Deployment", "gateway"))
    assert files["tls/tls.crt"] == (secret, "tls.crt") and files["tls/ca.crt"] == (secret, "ca.crt")
    named = render(None, sets=("gateway.tls.enabled=true", "gateway.tls.certManager.enabled=true",
                               "gateway.tls.certManager.issuerRef.name=ca", "gateway.tls.secretName=mine",
                               "gateway.tls.certManager.dnsNames={infer.example.com}"))
    assert one(named, "Certificate")["spec"]["secretName"] == "mine"
    assert one(named, "Certificate")["spec"]["dnsNames"] == ["infer.example.com"]


def test_mutual_tls_toward_clients_mounts_the_client_ca():
    objects = render(None, sets=TLS_SECRET + ("gateway.tls.clientCA.enabled=true",))
    assert projected_files(pod_spec(objects, "Deployment", "gateway"))["tls/ca.crt"] == ("gw-tls", "ca.crt")
    assert "tls_client_ca_file: /etc/tritonfleet/tls/ca.crt" in gateway_yaml(objects)


def test_upstream_tls_puts_triton_on_mutual_tls_with_its_secret_and_keeps_http_probes():
    objects = render(None, sets=UPSTREAM)
    spec = pod_spec(objects, "Deployment", "triton")
    triton = container(spec)
    tls_dir = "/etc/tritonfleet/upstream-tls"
    assert {"--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true", f"--grpc-server-cert={tls_dir}/tls.crt",
            f"--grpc-server-key={tls_dir}/tls.key", f"--grpc-root-cert={tls_dir}/ca.crt"} <= set(triton["args"])
    assert mounts(triton)[tls_dir] == {"name": "upstream-tls", "mountPath": tls_dir, "readOnly": True}
    assert volumes(spec)["upstream-tls"]["secret"] == {"secretName": "up-tls"}
    # Triton's HTTP port stays plaintext: the kubelet's probes keep working with gRPC on TLS.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert triton[probe]["httpGet"]["port"] == "http"
    gateway = pod_spec(objects, "Deployment", "gateway")
    files = projected_files(gateway)
    assert {files[f"upstream-tls/{key}"] for key in ("tls.crt", "tls.key", "ca.crt")} == {
        ("up-tls", "tls.crt"), ("up-tls", "tls.key"), ("up-tls", "ca.crt")}
    text = gateway_yaml(objects)
    assert "upstream_tls: true" in text and f"upstream_server_name: {HEADLESS}" in text
    assert not any(a.startswith("--grpc-use-ssl") for a in container(pod_spec(render(None), "Deployment", "triton"))["args"])


def test_api_keys_mount_the_keys_file_and_the_chart_clients_send_the_token():
    objects = render(TLS_CI)
    assert projected_files(pod_spec(objects, "Deployment", "gateway"))["api-keys/keys.yaml"] == ("gateway-api-keys", "keys.yaml")
    job = pod_spec(objects, "Job", "loadtest")
    args = container(job)["args"]
    assert "--api-key-file=/etc/tritonfleet/client-token/token" in args
    assert {"--tls-ca-file=/etc/tritonfleet/tls/ca.crt", "--tls-cert-file=/etc/tritonfleet/tls/tls.crt",
            "--tls-key-file=/etc/tritonfleet/tls/tls.key"} <= set(args)
    for spec in (job, one(objects, "Pod")["spec"]):
        token = volumes(spec)["client-token"]["secret"]
        assert token == {"secretName": "gateway-test-token", "items": [{"key": "token", "path": "token"}]}
        assert mounts(container(spec))["/etc/tritonfleet/client-token"]["readOnly"] is True


def test_restricted_protocols_share_one_secret_between_triton_and_the_gateway():
    objects = render(None)
    secret = one(objects, "Secret", "triton")
    assert secret["metadata"]["name"] == "fleet-tritonfleet-triton-admin"
    assert len(base64.b64decode(secret["data"]["header-value"])) == 48
    triton = container(pod_spec(objects, "Deployment", "triton"))
    assert f"--grpc-restricted-protocol={RESTRICTED}" in triton["args"]
    assert f"--http-restricted-api={RESTRICTED}" in triton["args"]
    gateway = container(pod_spec(objects, "Deployment", "gateway"))
    for c in (triton, gateway):
        assert env(c)["TRITON_ADMIN_HEADER_VALUE"]["valueFrom"]["secretKeyRef"] == {
            "name": "fleet-tritonfleet-triton-admin", "key": "header-value"}
    assert env(gateway)["TRITONFLEET_GATEWAY_TRITON_ADMIN_HEADER"]["value"] == (
        "tritonfleet-admin=$(TRITON_ADMIN_HEADER_VALUE)")
    # `$(VAR)` in an env value expands only from variables declared before it.
    names = [e["name"] for e in gateway["env"]]
    assert names.index("TRITON_ADMIN_HEADER_VALUE") < names.index("TRITONFLEET_GATEWAY_TRITON_ADMIN_HEADER")


def test_restricted_protocols_from_an_existing_secret_or_off():
    objects = render(None, sets=("triton.restrictedProtocols.secretName=admin-header",
                                 "triton.restrictedProtocols.protocols={model-repository}"))
    assert not by_kind(objects, "Secret")
    triton = container(pod_spec(objects, "Deployment", "triton"))
    assert env(triton)["TRITON_ADMIN_HEADER_VALUE"]["valueFrom"]["secretKeyRef"]["name"] == "admin-header"
    assert "--grpc-restricted-protocol=model-repository:tritonfleet-admin=$(TRITON_ADMIN_HEADER_VALUE)" in triton["args"]
    off = render(None, sets=("triton.restrictedProtocols.enabled=false",))
    assert not by_kind(off, "Secret")
    for spec in (pod_spec(off, "Deployment", "triton"), pod_spec(off, "Deployment", "gateway")):
        assert "TRITON_ADMIN_HEADER_VALUE" not in env(container(spec))
    assert not any("restricted" in a for a in container(pod_spec(off, "Deployment", "triton"))["args"])


def test_a_tls_gateway_is_probed_without_grpc_probes_the_kubelet_cannot_speak_over_tls():
    gateway = container(pod_spec(render(None, sets=TLS_SECRET), "Deployment", "gateway"))
    assert gateway["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_envoy_mode_mounts_the_same_secrets_at_the_same_paths():
    objects = render(ENVOY_TLS_CI)
    spec = pod_spec(objects, "Deployment", "gateway")
    envoy = container(spec, "envoy")
    assert mounts(envoy)["/etc/tritonfleet/tls"]["readOnly"] is True
    assert mounts(envoy)["/etc/tritonfleet/upstream-tls"]["readOnly"] is True
    assert [i["key"] for i in volumes(spec)["gateway-tls"]["secret"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    assert volumes(spec)["upstream-tls"]["secret"] == {"secretName": "triton-upstream-tls"}
    assert "TRITON_ADMIN_HEADER_VALUE" not in env(envoy)  # Envoy adds no admin header: admin RPCs are refused
    data = one(objects, "ConfigMap", "gateway")["data"]
    assert set(data) == {"envoy.yaml", "sds-gateway-tls.yaml", "sds-client-ca.yaml", "sds-upstream-tls.yaml",
                         "sds-upstream-ca.yaml"}


def test_the_network_policy_selects_exactly_the_triton_pods_and_admits_only_the_data_plane():
    for values in (TLS_CI, ENVOY_TLS_CI, str(CI / "networkpolicy-values.yaml")):
        objects = render(values, sets=("loadtest.enabled=true",))
        policy = one(objects, "NetworkPolicy")
        labels = pod_labels(objects)
        selected = [n for n, l in labels.items() if matches(policy["spec"]["podSelector"], l)]
        assert selected == ["fleet-tritonfleet-triton"], (values, selected)
        grpc_rule, metrics_rule = policy["spec"]["ingress"]
        admitted = [n for n, l in labels.items() if any(matches(peer["podSelector"], l) for peer in grpc_rule["from"])]
        # The load-test and helm-test pods go through the gateway (or Envoy): only it reaches Triton.
        assert admitted == ["fleet-tritonfleet-gateway"], (values, admitted)
        assert [p["port"] for p in grpc_rule["ports"]] == ["grpc"]
        assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"]
        assert metrics_rule["from"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
        assert "namespaceSelector" in metrics_rule["from"][0]


def pod_labels(objects) -> dict[str, dict]:
    """The labels every pod the chart renders carries: Deployments', the Job's, the helm test Pod's."""
    labels = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            labels[obj["metadata"]["name"]] = obj["spec"]["template"]["metadata"]["labels"]
        elif obj["kind"] == "Pod":
            labels[obj["metadata"]["name"]] = obj["metadata"]["labels"]
    return labels


def matches(selector: dict, labels: dict) -> bool:
    return selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("values", [None, TLS_CI, ENVOY_TLS_CI], ids=["defaults", "tls", "envoy-tls"])
def test_every_container_runs_as_non_root_and_read_only_where_the_image_allows(values):
    objects = render(values, sets=("loadtest.enabled=true",))
    for name, spec in pod_specs(objects):
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True and pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], name
            if c["name"] == "triton":
                continue  # Triton's root filesystem stays writable (see values.yaml: triton.securityContext)
            assert context["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
            tmp = mounts(c)["/tmp"]
            assert "emptyDir" in volumes(spec)[tmp["name"]], f"{name}/{c['name']}: /tmp is not an emptyDir"
            for path, mount in mounts(c).items():
                if path.startswith("/etc/"):
                    assert mount.get("readOnly") is True, f"{name}/{c['name']} mounts {path} writable"


@pytest.mark.parametrize("sets, message", [
    (("gateway.tls.enabled=true",),
     "gateway.tls.enabled needs gateway.tls.secretName (an existing kubernetes.io/tls Secret) or gateway.tls.certManager.enabled"),
    (("gateway.tls.enabled=true", "gateway.tls.certManager.enabled=true"),
     "gateway.tls.certManager.enabled needs gateway.tls.certManager.issuerRef.name"),
    (("gateway.tls.certManager.enabled=true", "gateway.tls.certManager.issuerRef.name=ca"),
     "gateway.tls.certManager.enabled needs gateway.tls.enabled"),
    (("gateway.tls.clientCA.enabled=true",), "gateway.tls.clientCA.enabled (mutual TLS) needs gateway.tls.enabled"),
    (("gateway.upstreamTLS.enabled=true",), "gateway.upstreamTLS.enabled needs gateway.upstreamTLS.secretName"),
    (UPSTREAM + ("gateway.enabled=false",), "gateway.upstreamTLS.enabled needs gateway.enabled"),
    (("gateway.apiKeys.enabled=true",), "gateway.apiKeys.enabled needs gateway.apiKeys.secretName"),
    (("gateway.apiKeys.enabled=true", "gateway.apiKeys.secretName=k", "gateway.mode=envoy"),
     "gateway.apiKeys.enabled needs gateway.mode gateway: Envoy does not check tritonfleet's API keys"),
    (("gateway.apiKeys.enabled=true", "gateway.apiKeys.secretName=k"),
     "gateway.apiKeys.enabled needs gateway.apiKeys.clientToken.secretName"),
    (("triton.restrictedProtocols.protocols={model-repo}",), "/triton/restrictedProtocols/protocols/0"),
    (("gateway.tls.secretName=Not_A_Name",), "/gateway/tls/secretName"),
    (("gateway.tls.certManager.duration=90days",), "/gateway/tls/certManager/duration"),
    (("gateway.tls.insecure=true",), "additional properties 'insecure' not allowed"),
])
def test_impossible_access_values_are_refused_with_a_clear_message(sets, message):
    assert message in render_error(*sets)
