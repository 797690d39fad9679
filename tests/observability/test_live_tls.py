"""The TLS handshake panel and alert on real data: a real Prometheus, from the local stack's config,
scrapes a real gateway with mutual TLS while clients fail their handshakes (plaintext, no client
certificate), others go away mid-handshake and TCP probes connect and close (the chart's readiness
probe behind TLS). The panel shows the two refusals and counts neither the clients that left nor
the probes; the alert goes pending for exactly the two misconfigured clients' reasons."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from gateway.transport.frames import PREFACE
from observability import selectors
from observability.live_panels import live_dashboards
from observability.prometheus_api import PrometheusAPI
from tests.gateway.helpers import TEST_REPOSITORY, closed_by_peer
from tests.polling import wait_until
from tritonfleet.certificates import LocalCA
from tritonfleet.proxies import GatewayProcess
from tritonfleet.triton_server import LOOPBACK, start_fleet, stop_all

pytestmark = pytest.mark.slow

RATE_INTERVAL = "10s"
PANEL = "TLS handshakes refused"
ALERT = "GatewayTLSHandshakesFailing"
# Each kind of client connects this often: the alert's rate over its 5-minute window must pass
# 0.05/s (15 refusals) while only seconds of the series exist.
CONNECTIONS = 30


@pytest.fixture(scope="module")
def tls_gateway(prometheus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tls-stack")
    ca = LocalCA(workdir, "gateway")
    server, client = ca.issue("server", "localhost", LOOPBACK), ca.issue("client", "camera-7")
    flags = ["--tls-cert-file", str(server.cert_file), "--tls-key-file", str(server.key_file),
             "--tls-client-ca-file", str(ca.ca_file)]
    client_tls = {"ssl": True, "root_certificates": str(ca.ca_file), "private_key": str(client.key_file),
                  "certificate_chain": str(client.cert_file)}
    servers = start_fleet(1, TEST_REPOSITORY, workdir)
    try:
        with GatewayProcess([s.grpc_url for s in servers], workdir / "gateway.log", *flags,
                            client_tls=client_tls) as gateway:
            prometheus.set_targets(selectors.GATEWAY, [f"{LOOPBACK}:{gateway.metrics_port}"])
            yield {"gateway": gateway, "api": PrometheusAPI(prometheus.url), "ca": ca}
    finally:
        stop_all(servers)


def refusals(api: PrometheusAPI, expr: str) -> dict[str, float]:
    """Each reason's highest value of `expr` over the last minute (a rate stays up only as long as
    its interval, so a slow poll could miss it at one instant)."""
    end = time.time()
    return {r["metric"].get("reason", ""): max(float(v) for _, v in r["values"])
            for r in api.query_range(expr, end - 60, end, 1)}


def plaintext_client(gateway) -> None:
    with socket.create_connection((LOOPBACK, gateway.port), timeout=10) as sock:
        sock.sendall(PREFACE)
        closed_by_peer(sock)


def client_without_certificate(gateway, ca: LocalCA) -> None:
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((LOOPBACK, gateway.port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                closed_by_peer(tls)  # TLS 1.3: the client's side completes, the server then refuses
        except (ssl.SSLError, ConnectionResetError):
            pass


def client_gone_mid_handshake(gateway, ca: LocalCA) -> None:
    """Half a ClientHello, then the connection closes: a client that gave up, or a scanner."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context(cafile=str(ca.ca_file)).wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    with socket.create_connection((LOOPBACK, gateway.port), timeout=10) as sock:
        sock.sendall(hello[: len(hello) // 2])


def tcp_probe(gateway) -> None:
    """What the kubelet's tcpSocket probe does: connect, and close."""
    socket.create_connection((LOOPBACK, gateway.port), timeout=10).close()


def test_the_panel_shows_each_refusal_and_the_alert_spares_the_probes(tls_gateway):
    gateway, api = tls_gateway["gateway"], tls_gateway["api"]
    (board,) = [b for b in live_dashboards(RATE_INTERVAL) if b["uid"] == "tritonfleet-gateway"]
    (panel,) = [p for p in board["panels"] if p["title"] == PANEL]
    (expr,) = [t["expr"] for t in panel["targets"]]
    # Every reason is exported at 0 from the gateway's start: once Prometheus has those zeros, the
    # refusals below are an increase of the series (a series first seen above 0 has no rate yet).
    wait_until(lambda: "not_tls" in refusals(api, "tritonfleet_gateway_tls_handshake_failures_total"),
               "Prometheus to scrape the gateway's TLS counters at 0", 60, 0.2)
    for _ in range(CONNECTIONS):
        plaintext_client(gateway)
        client_without_certificate(gateway, tls_gateway["ca"])
        client_gone_mid_handshake(gateway, tls_gateway["ca"])
        tcp_probe(gateway)
    refused = ("not_tls", "no_client_certificate")
    shown = wait_until(lambda: (lambda r: r if all(r.get(reason, 0) > 0 for reason in refused) else None)(
        refusals(api, expr)), f"the {PANEL!r} panel to show both refusals", 60, 0.5)
    assert {reason for reason, rate in shown.items() if rate > 0} == set(refused)

    def pending() -> set[str]:
        return {a["labels"]["reason"] for a in api.alerts() if a["labels"]["alertname"] == ALERT}

    assert wait_until(lambda: pending() >= {"not_tls", "no_client_certificate"},
                      f"{ALERT} to be pending for both misconfigured clients", 60, 0.5)
    # No other reason is pending: the clients that left and the probes were not counted.
    assert pending() == {"not_tls", "no_client_certificate"}
