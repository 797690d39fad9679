"""The load generator over TLS: `--tls-ca-file`, mutual TLS and `--tls-server-name` against the real
gateway (with TLS toward clients) in front of a real Triton server."""

from __future__ import annotations

import pytest

from loadtest.results import RunResult, summarize
from tritonfleet.certificates import LocalCA
from tritonfleet.cli import main as cli_main
from tritonfleet.proxies import GatewayProcess

pytestmark = pytest.mark.slow

NAME = "gateway.loadtest.test"  # the only name in the gateway's certificate: the URL's host is not in it


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = LocalCA(tmp_path_factory.mktemp("pki"), "loadtest")
    return ca, ca.issue("gateway", NAME), ca.issue("client", "load-generator")


@pytest.fixture(scope="module")
def mtls_gateway(tiny_server, pki, tmp_path_factory):
    ca, server, client = pki
    flags = ["--tls-cert-file", str(server.cert_file), "--tls-key-file", str(server.key_file),
             "--tls-client-ca-file", str(ca.ca_file)]
    ready = {"ssl": True, "root_certificates": str(ca.ca_file), "private_key": str(client.key_file),
             "certificate_chain": str(client.cert_file), "channel_args": [("grpc.ssl_target_name_override", NAME)]}
    with GatewayProcess([tiny_server.grpc_url], tmp_path_factory.mktemp("gateway") / "gateway.log", *flags,
                        client_tls=ready) as gateway:
        yield gateway


def image_cli(url: str, output, *extra: str) -> int:
    return cli_main(["loadtest", "image", "--url", url, "--model", "tiny_image", "--warmup", "0", "--quiet",
                     "--duration", "1", "--rate", "10", "--workers", "1", "--timeout", "5", "-o", str(output), *extra])


def test_a_run_over_mutual_tls_checks_the_server_name(mtls_gateway, pki, tmp_path):
    """Without --tls-server-name (the certificate does not name 127.0.0.1) or without the client
    certificate the workers never connect; those runs wait out the connect timeout, so are not here."""
    ca, _, client = pki
    output = tmp_path / "run.json"
    assert image_cli(mtls_gateway.url, output, "--tls-ca-file", str(ca.ca_file), "--tls-cert-file",
                     str(client.cert_file), "--tls-key-file", str(client.key_file), "--tls-server-name", NAME) == 0
    summary = summarize(RunResult.load(output))
    assert (summary["ok"], summary["errors"]) == (10, 0), summary


def test_tls_flags_that_cannot_work_are_refused_before_the_run(tmp_path, capsys):
    assert image_cli("127.0.0.1:1", tmp_path / "run.json", "--tls-ca-file", str(tmp_path / "absent.pem")) == 2
    assert "--tls-ca-file" in capsys.readouterr().err
    assert image_cli("127.0.0.1:1", tmp_path / "run.json", "--tls-cert-file", str(tmp_path / "c.pem")) == 2
    assert "--tls-cert-file and --tls-key-file go together" in capsys.readouterr().err
