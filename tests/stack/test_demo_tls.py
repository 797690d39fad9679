"""`tritonfleet demo --tls`, in its pieces (the whole demo runs minutes of load): the throwaway
certificate, handed to the gateway the stack starts through its environment, trusted by the demo's
clients. The gateway is the real one; no Triton server is needed for its handshake."""

from __future__ import annotations

import socket
import ssl

from tritonfleet.demo import front_door, gateway_tls
from tritonfleet.paths import REPO_ROOT
from tritonfleet.stack import Stack
from tritonfleet.stack_config import parse_stack_config
from tritonfleet.triton_server import LOOPBACK

GATEWAY_ONLY = {"services": [{
    "name": "gateway", "kind": "command", "ports": ["grpc", "metrics"],
    # No pod answers there: the handshake is the gateway's own, before any call.
    "argv": ["{python}", "-m", "tritonfleet.cli", "gateway", "--listen", "127.0.0.1:{port.grpc}",
             "--backend", "127.0.0.1:9", "--metrics-port", "{port.metrics}"],
}]}


def test_the_gateway_of_the_stack_serves_tls_with_the_certificate_the_demo_clients_trust(tmp_path):
    environment, client_tls = gateway_tls(tmp_path / "demo")
    with Stack(parse_stack_config(GATEWAY_ONLY, REPO_ROOT), tmp_path / "demo", environment) as stack:
        door = front_door(stack, client_tls)
        assert (door.label, door.tls) == ("the gateway over TLS", client_tls)
        host, _, port = door.url.rpartition(":")
        context = ssl.create_default_context(cafile=client_tls.ca_file)
        context.set_alpn_protocols(["h2"])
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
            assert tls.selected_alpn_protocol() == "h2"
