"""The benchmark's own baseline proxy, beside the gateway, Envoy and HAProxy that tritonfleet.proxies
starts for the benchmark and the tests alike."""

from __future__ import annotations

import sys
from pathlib import Path

from tritonfleet.proxies import ProxyProcess
from tritonfleet.triton_server import LOOPBACK, free_port


def start_naive_proxy(backends: list[str], workdir: Path) -> ProxyProcess:
    """bench/gateway/naive_proxy.py: grpc.aio forwarding with nothing else, the benchmark's baseline."""
    port = free_port()
    script = Path(__file__).with_name("naive_proxy.py")
    return ProxyProcess("naive proxy", [sys.executable, str(script), f"{LOOPBACK}:{port}", *backends],
                        f"{LOOPBACK}:{port}", workdir / "naive-proxy.log")
