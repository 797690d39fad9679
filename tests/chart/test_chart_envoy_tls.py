"""The chart's TLS, run for real: the Envoy config and Triton flags rendered from ci/envoy-tls-values.yaml,
with trustme certificates where the Secrets would be mounted. A real Triton server with the chart's
`--grpc-use-ssl-mutual` and restricted-protocol flags, the real Envoy on the rendered config (mutual TLS
toward clients and toward Triton, certificates through file-based SDS), and the chart's own `helm test`
program run against it: an inference over mutual TLS through Envoy to Triton."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from gateway import config as gateway_config
from tests.chart.chart_render import CHART, one, render
from tests.polling import wait_until
from tritonfleet.paths import MODEL_REPOSITORY
from tritonfleet.proxies import ProxyProcess, envoy_binary, envoy_healthy_hosts
from tritonfleet.triton_server import LOOPBACK, free_port, start_fleet, stop_all

GATEWAY_HOST = "fleet-tritonfleet-gateway.inference.svc.cluster.local"
TRITON_HOST = "fleet-tritonfleet-triton.inference.svc.cluster.local"
ADMIN_HEADER_VALUE = "s3cret-header-value"
# Signs the gateway's certificate and the clients' (the CA a cert-manager CA issuer would write as ca.crt).
CLIENT_CA = trustme.CA()
# The Triton flags the access layer adds; the rest (ports, repository) are the local server's own.
ACCESS_FLAGS = ("--grpc-use-ssl", "--grpc-server-cert", "--grpc-server-key", "--grpc-root-cert",
                "--grpc-restricted-protocol", "--http-restricted-api")


def write_pair(cert: trustme.LeafCert, ca: trustme.CA, folder: Path, version: int = 1) -> None:
    """A kubernetes.io/tls Secret as the kubelet mounts it: the files in a versioned folder, a `..data`
    link to it swapped by a rename when the Secret changes, and tls.crt, tls.key, ca.crt through it."""
    data = folder / f"..v{version}"
    data.mkdir(parents=True)
    cert.cert_chain_pems[0].write_to_path(str(data / "tls.crt"))
    cert.private_key_pem.write_to_path(str(data / "tls.key"))
    ca.cert_pem.write_to_path(str(data / "ca.crt"))
    (folder / "..data_tmp").symlink_to(data.name)
    (folder / "..data_tmp").rename(folder / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")


def rooted(text: str, root: Path) -> str:
    """The rendered paths under /etc/ moved below `root`, where the test put the mounted files."""
    return text.replace("/etc/", f"{root}/etc/")


def kubelet_expand(arg: str, environ: dict[str, str]) -> str:
    for name, value in environ.items():
        arg = arg.replace(f"$({name})", value)
    return arg


def local_envoy(envoy_yaml: str, root: Path, triton_grpc: str) -> tuple[dict, int, int]:
    """The rendered config on loopback ports, its cluster on the local Triton; TLS settings untouched."""
    config = yaml.safe_load(rooted(envoy_yaml, root))
    port, admin_port = free_port(), free_port()
    config["admin"]["address"]["socket_address"].update(address=LOOPBACK, port_value=admin_port)
    grpc, metrics = config["static_resources"]["listeners"]
    grpc["address"]["socket_address"].update(address=LOOPBACK, port_value=port)
    metrics["address"]["socket_address"].update(address=LOOPBACK, port_value=free_port())
    host, _, grpc_port = triton_grpc.rpartition(":")
    triton = next(c for c in config["static_resources"]["clusters"] if c["name"] == "triton")
    triton["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"].update(
        address=host, port_value=int(grpc_port))
    return config, port, admin_port


@pytest.fixture(scope="module")
def chart():
    return render(str(CHART / "ci/envoy-tls-values.yaml"))


@pytest.fixture(scope="module")
def mounted(chart, tmp_path_factory):
    """The Secrets' files and the ConfigMap's, where the pods would have them (below a temp root)."""
    root = tmp_path_factory.mktemp("mounts")
    upstream_ca = trustme.CA()
    write_pair(CLIENT_CA.issue_cert(GATEWAY_HOST, LOOPBACK), CLIENT_CA, root / "etc/tritonfleet/tls")
    write_pair(upstream_ca.issue_cert(TRITON_HOST), upstream_ca, root / "etc/tritonfleet/upstream-tls")
    envoy_dir = root / "etc/envoy"
    envoy_dir.mkdir(parents=True)
    for key, text in one(chart, "ConfigMap", "gateway")["data"].items():
        (envoy_dir / key).write_text(rooted(text, root))
    return root


@pytest.fixture(scope="module")
def triton(chart, mounted, tmp_path_factory):
    container = one(chart, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
    flags = [kubelet_expand(rooted(a, mounted), {"TRITON_ADMIN_HEADER_VALUE": ADMIN_HEADER_VALUE})
             for a in container["args"] if a.startswith(ACCESS_FLAGS)]
    assert len(flags) == len(ACCESS_FLAGS) + 1  # --grpc-use-ssl and --grpc-use-ssl-mutual
    servers = start_fleet(1, MODEL_REPOSITORY, tmp_path_factory.mktemp("triton"),
                          extra_args=[*flags, "--model-control-mode=explicit", "--load-model=image_preprocess"])
    yield servers[0]
    stop_all(servers)


@pytest.fixture(scope="module")
def envoy(chart, mounted, triton, tmp_path_factory):
    envoy_yaml = one(chart, "ConfigMap", "gateway")["data"]["envoy.yaml"]
    config, port, admin_port = local_envoy(envoy_yaml, mounted, triton.grpc_url)
    workdir = tmp_path_factory.mktemp("envoy")
    path = workdir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [str(envoy_binary()), "-c", str(path), "--concurrency", "1", "--base-id", str(port), "--log-level", "warn"]
    proxy = ProxyProcess("envoy", argv, f"{LOOPBACK}:{port}", workdir / "envoy.log")
    proxy.admin_url = f"http://{LOOPBACK}:{admin_port}"
    try:
        # Envoy's gRPC health checks pass only over mutual TLS with the pod's certificate checked.
        proxy.wait_until(lambda: envoy_healthy_hosts(proxy.admin_url) >= 1, 30.0, "the Triton pod healthy over TLS")
        yield proxy
    finally:
        proxy.stop()


def test_the_real_envoy_validates_the_rendered_tls_config(chart, mounted):
    result = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(mounted / "etc/envoy/envoy.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_the_helm_test_program_infers_over_mutual_tls_through_envoy_to_triton(chart, mounted, envoy):
    script = one(chart, "Pod")["spec"]["containers"][0]["command"][2]
    assert f'"{GATEWAY_HOST}:8001"' in script
    script = rooted(script, mounted).replace(f"{GATEWAY_HOST}:8001", envoy.url)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "inference through the gateway OK: (1, 3, 224, 224)" in result.stdout


def test_a_client_without_a_certificate_is_refused(mounted, envoy):
    client = grpcclient.InferenceServerClient(envoy.url, ssl=True,
                                              root_certificates=str(mounted / "etc/tritonfleet/tls/ca.crt"))
    with pytest.raises(InferenceServerException):
        client.is_server_ready(client_timeout=10)
    client.close()


def gateway_admin_header() -> tuple[str, str]:
    """The metadata the gateway sends with admin RPCs, from the chart's env expanded as the kubelet
    would and read by the gateway's own config parser."""
    gateway = one(render(None), "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    value = next(e["value"] for e in gateway["env"] if e["name"] == "TRITONFLEET_GATEWAY_TRITON_ADMIN_HEADER")
    parsed = gateway_config.from_mapping({"backends": ["a:1"], "triton_admin_header": kubelet_expand(
        value, {"TRITON_ADMIN_HEADER_VALUE": ADMIN_HEADER_VALUE})})
    (key, value), = parsed.triton_admin_metadata
    return key, value


def test_triton_serves_admin_protocols_only_with_the_header_the_gateway_is_given(mounted, triton, envoy):
    tls = mounted / "etc/tritonfleet/upstream-tls"
    direct = grpcclient.InferenceServerClient(triton.grpc_url, ssl=True, root_certificates=str(tls / "ca.crt"),
                                              private_key=str(tls / "tls.key"), certificate_chain=str(tls / "tls.crt"),
                                              channel_args=[("grpc.ssl_target_name_override", TRITON_HOST)])
    key, value = gateway_admin_header()
    index = direct.get_model_repository_index(headers={key: value}, as_json=True)
    assert "image_preprocess" in {m["name"] for m in index["models"]}
    with pytest.raises(InferenceServerException, match="restricted"):
        direct.get_model_repository_index(headers={key: "guess"})
    direct.close()
    # The plaintext HTTP port the probes use answers health, and admin APIs only with the header.
    assert http_status(triton.http_url, "GET", "/v2/health/ready") == 200
    assert http_status(triton.http_url, "POST", "/v2/repository/index") != 200
    assert http_status(triton.http_url, "POST", "/v2/repository/index", {"tritonfleet-admin": ADMIN_HEADER_VALUE}) == 200
    # Envoy adds no admin header: through it, admin RPCs are refused and inference still works.
    through = grpcclient.InferenceServerClient(envoy.url, ssl=True, **client_files(mounted))
    wait_until(lambda: through.is_model_ready("image_preprocess"), "image_preprocess ready through Envoy")
    with pytest.raises(InferenceServerException, match="restricted"):
        through.get_model_repository_index()
    through.close()


def http_status(address: str, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(f"http://{address}{path}", method=method, headers=headers or {},
                                     data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def client_files(root: Path) -> dict[str, str]:
    tls = root / "etc/tritonfleet/tls"
    return {"root_certificates": str(tls / "ca.crt"), "private_key": str(tls / "tls.key"),
            "certificate_chain": str(tls / "tls.crt")}


def served_certificate(url: str, root: Path) -> bytes:
    """The certificate Envoy presents on a new connection (DER), seen by a client with a certificate."""
    tls = root / "etc/tritonfleet/tls"
    context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    context.load_cert_chain(str(tls / "tls.crt"), str(tls / "tls.key"))
    context.set_alpn_protocols(["h2"])
    host, _, port = url.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as conn:
            return conn.getpeercert(binary_form=True)


def test_envoy_serves_a_renewed_certificate_without_a_restart(mounted, envoy):
    """A renewal (cert-manager writes the Secret, the kubelet swaps `..data`) reaches new connections."""
    before = served_certificate(envoy.url, mounted)
    renewed = CLIENT_CA.issue_cert(GATEWAY_HOST, LOOPBACK)
    write_pair(renewed, CLIENT_CA, mounted / "etc/tritonfleet/tls", version=2)
    expected = ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
    assert expected != before
    wait_until(lambda: served_certificate(envoy.url, mounted) == expected, "Envoy serving the renewed certificate")
    assert envoy.is_running()
