"""TLS through the gateway with real clients and real Triton servers: TLS toward clients (ALPN h2),
mutual TLS, certificates reloaded from their files for new connections, and TLS toward the pods."""

from __future__ import annotations

import os
import socket
import ssl

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.edge.tls import HANDSHAKE_FAILURES
from gateway.transport.frames import PREFACE
from tests.gateway.helpers import TEST_REPOSITORY, GatewayProcess, StreamClient, add_one_inputs, closed_by_peer
from tests.gateway.polling import metric, samples
from tests.polling import wait_until
from tritonfleet.certificates import IssuedFiles, LocalCA
from tritonfleet.triton_server import LOOPBACK, start_fleet, stop_all

pytestmark = pytest.mark.slow

EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_FRAME = 0x04
RELOAD_ENV = {"TRITONFLEET_GATEWAY_RELOAD_INTERVAL_S": "0.1"}


def server_flags(files: IssuedFiles) -> list[str]:
    return ["--tls-cert-file", str(files.cert_file), "--tls-key-file", str(files.key_file)]


def client_tls(ca_file, client: IssuedFiles | None = None) -> dict:
    """tritonclient's keywords for a TLS client trusting `ca_file` (and presenting `client`)."""
    tls = {"ssl": True, "root_certificates": str(ca_file)}
    if client is not None:
        tls.update(private_key=str(client.key_file), certificate_chain=str(client.cert_file))
    return tls


def add_one(url: str, **tls) -> list[float]:
    client = grpcclient.InferenceServerClient(url, **tls)
    try:
        return list(client.infer("add_one", add_one_inputs((1.0, 2.0)), client_timeout=10).as_numpy("OUTPUT0"))
    finally:
        client.close()


def refused(url: str, **tls) -> bool:
    try:
        add_one(url, **tls)
    except InferenceServerException as exc:
        return exc.status() == "StatusCode.UNAVAILABLE"
    return False


def peer_certificate(url: str) -> bytes:
    """The DER certificate the gateway shows a new connection (checked by nothing: only looked at)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    host, _, port = url.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


HANDSHAKE_FAILURES_METRIC = "tritonfleet_gateway_tls_handshake_failures_total"


def handshake_failures(gateway, reason: str) -> float:
    return metric(gateway.metrics_url, HANDSHAKE_FAILURES_METRIC, reason=reason)


def der(files: IssuedFiles) -> bytes:
    return ssl.PEM_cert_to_DER_cert(files.cert_file.read_text())


def replace(path, data: bytes) -> None:
    """Write the whole file at once, as a Secret mount's symlink swap does: no half-written reads."""
    staged = path.with_suffix(".new")
    staged.write_bytes(data)
    os.replace(staged, path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca, other = LocalCA(directory, "gateway"), LocalCA(directory, "other")
    return {"server": ca.issue("server", "localhost", LOOPBACK), "client": ca.issue("client", "camera-7"),
            "stranger": other.issue("stranger", "camera-8"), "ca": ca.ca_file}


@pytest.fixture(scope="module")
def tls_gateway(fleet3, pki, tmp_path_factory):
    log = tmp_path_factory.mktemp("gateway-tls") / "gateway.log"
    with GatewayProcess([s.grpc_url for s in fleet3], log, *server_flags(pki["server"]),
                        client_tls=client_tls(pki["ca"])) as gateway:
        yield gateway


def test_a_tls_client_infers_and_streams_through_the_gateway(tls_gateway, pki):
    assert add_one(tls_gateway.url, **client_tls(pki["ca"])) == [2.0, 3.0]
    stream = StreamClient(tls_gateway.url, **client_tls(pki["ca"]))
    for index in range(10):
        stream.send("add_one", add_one_inputs([index]), request_id=str(index))
    answers = stream.close()
    assert all(error is None for _, error in answers), [e for _, e in answers if e][:3]
    assert {int(r.get_response().id): r.as_numpy("OUTPUT0")[0] for r, _ in answers} == {i: i + 1 for i in range(10)}


def test_plaintext_to_the_tls_port_fails_while_a_tls_client_keeps_working(tls_gateway, pki):
    client = grpcclient.InferenceServerClient(tls_gateway.url, **client_tls(pki["ca"]))
    try:
        assert client.infer("add_one", add_one_inputs()).as_numpy("OUTPUT0").tolist() == [2.0, 3.0, 4.0]
        assert refused(tls_gateway.url)  # a plaintext gRPC client
        with socket.create_connection((LOOPBACK, tls_gateway.port), timeout=5) as raw:
            raw.sendall(PREFACE)  # plaintext HTTP/2, not a ClientHello
            assert closed_by_peer(raw)
        assert client.infer("add_one", add_one_inputs()).as_numpy("OUTPUT0").tolist() == [2.0, 3.0, 4.0]
        wait_until(lambda: handshake_failures(tls_gateway, "not_tls") >= 1, "plaintext to be counted as not TLS", 20)
        # Every reason is exported from the start, at 0 until it happens.
        exported = {sample.labels["reason"] for sample in samples(tls_gateway.metrics_url, HANDSHAKE_FAILURES_METRIC)}
        assert exported >= set(HANDSHAKE_FAILURES)
    finally:
        client.close()


def test_alpn_is_h2_and_a_client_without_h2_is_not_served(tls_gateway, pki):
    def connect(protocols):
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        if protocols:
            context.set_alpn_protocols(protocols)
        raw = socket.create_connection((LOOPBACK, tls_gateway.port), timeout=5)
        return context.wrap_socket(raw, server_hostname=LOOPBACK)

    with connect(["h2", "http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "h2"
    with connect([]) as tls:  # no ALPN at all: served, as HTTP/2
        assert tls.selected_alpn_protocol() is None
        tls.sendall(PREFACE + EMPTY_SETTINGS)
        assert tls.recv(9)[3] == SETTINGS_FRAME  # the gateway's own SETTINGS come back
    with connect(["http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() is None
        tls.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert closed_by_peer(tls)  # an HTTP/1.1 request is no HTTP/2 preface


def test_mutual_tls_serves_only_clients_with_a_certificate_of_its_ca(fleet3, pki, tmp_path):
    mine = client_tls(pki["ca"], pki["client"])
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(pki["ca"].read_bytes())
    flags = [*server_flags(pki["server"]), "--tls-client-ca-file", str(client_ca)]
    with GatewayProcess([s.grpc_url for s in fleet3], tmp_path / "gateway.log", *flags, env=RELOAD_ENV,
                        client_tls=mine) as gateway:
        assert add_one(gateway.url, **mine) == [2.0, 3.0]
        assert refused(gateway.url, **client_tls(pki["ca"]))  # no client certificate
        stranger = client_tls(pki["ca"], pki["stranger"])
        assert refused(gateway.url, **stranger)  # signed by another CA
        # Each refused handshake is counted with its reason, none as another's.
        wait_until(lambda: handshake_failures(gateway, "no_client_certificate") >= 1
                   and handshake_failures(gateway, "bad_client_certificate") >= 1,
                   "both refused handshakes to be counted", 20)
        assert handshake_failures(gateway, "not_tls") == 0
        # The client CA file now trusts the other CA too: its clients are served from then on.
        replace(client_ca, pki["ca"].read_bytes() + pki["stranger"].ca_file.read_bytes())
        wait_until(lambda: not refused(gateway.url, **stranger), "the other CA's client to be served", 20)
        assert add_one(gateway.url, **mine) == [2.0, 3.0]


def test_a_new_certificate_serves_new_connections_and_a_broken_one_is_counted_and_ignored(fleet3, pki, tmp_path):
    served = LocalCA(tmp_path / "first", "first").issue("server", LOOPBACK)
    with GatewayProcess([s.grpc_url for s in fleet3], tmp_path / "gateway.log", *server_flags(served),
                        env=RELOAD_ENV, client_tls=client_tls(served.ca_file)) as gateway:
        old = grpcclient.InferenceServerClient(gateway.url, **client_tls(served.ca_file))
        try:
            assert old.infer("add_one", add_one_inputs()).as_numpy("OUTPUT0").tolist() == [2.0, 3.0, 4.0]
            renewed = LocalCA(tmp_path / "second", "second").issue("server", LOOPBACK)
            replace(served.key_file, renewed.key_file.read_bytes())
            replace(served.cert_file, renewed.cert_file.read_bytes())
            wait_until(lambda: peer_certificate(gateway.url) == der(renewed), "the renewed certificate", 20)
            assert add_one(gateway.url, **client_tls(renewed.ca_file)) == [2.0, 3.0]
            assert refused(gateway.url, **client_tls(served.ca_file))
            # The connection made before the change keeps its certificate and goes on serving.
            assert old.infer("add_one", add_one_inputs()).as_numpy("OUTPUT0").tolist() == [2.0, 3.0, 4.0]

            replace(served.cert_file, b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")
            wait_until(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_tls_reloads_total",
                                      outcome="failed") >= 1, "the failed reload to be counted", 20)
            assert peer_certificate(gateway.url) == der(renewed)
            assert add_one(gateway.url, **client_tls(renewed.ca_file)) == [2.0, 3.0]
            assert metric(gateway.metrics_url, "tritonfleet_gateway_tls_reloads_total", outcome="reloaded") >= 1
        finally:
            old.close()


def test_tls_to_pods_that_require_it_with_a_client_certificate(pki, tmp_path):
    """Triton with --grpc-use-ssl-mutual: the gateway's health checks (grpcio) and data path (its own
    HTTP/2) both speak TLS, check the pod's name given as upstream_server_name, and show their own
    certificate."""
    ca = LocalCA(tmp_path / "pods", "pods")
    pod, gateway_client = ca.issue("triton", "triton.pods.test"), ca.issue("gateway", "gateway.test")
    servers = start_fleet(1, TEST_REPOSITORY, tmp_path / "fleet", extra_args=[
        "--grpc-use-ssl=true", "--grpc-use-ssl-mutual=true", f"--grpc-server-cert={pod.cert_file}",
        f"--grpc-server-key={pod.key_file}", f"--grpc-root-cert={ca.ca_file}"])
    try:
        assert refused(servers[0].grpc_url)  # the pod takes no plaintext
        upstream = ["--upstream-tls", "--upstream-ca-file", str(ca.ca_file), "--upstream-cert-file",
                    str(gateway_client.cert_file), "--upstream-key-file", str(gateway_client.key_file),
                    "--upstream-server-name", "triton.pods.test"]
        with GatewayProcess([s.grpc_url for s in servers], tmp_path / "gateway.log", *upstream) as gateway:
            wait_until(lambda: not refused(gateway.url), "the pod to be admitted over TLS", 30)
            assert add_one(gateway.url) == [2.0, 3.0]
            stream = StreamClient(gateway.url)
            for index in range(5):
                stream.send("add_one", add_one_inputs([index]), request_id=str(index))
            answers = stream.close()
            assert sorted(int(r.as_numpy("OUTPUT0")[0]) for r, e in answers if e is None) == [1, 2, 3, 4, 5]
            assert metric(gateway.metrics_url, "tritonfleet_gateway_backend_up") == 1
    finally:
        stop_all(servers)
