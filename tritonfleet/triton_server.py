"""Start, watch and stop real `tritonserver` processes on this machine.

One `TritonServer` is one process with its own ports and log file. `start_fleet` starts several on
one model repository and gives them back only when every one is ready, or stops them all and raises.
Every server runs in its own process group (Python-backend stubs are its children) and is asked to
die with its parent, so an interrupted test or a Ctrl-C leaves no `tritonserver` behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tritonfleet.triton_install import TritonInstall

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class TritonServerError(RuntimeError):
    """A server could not start or become ready."""


class PortInUseError(TritonServerError):
    pass


class ModelLoadError(TritonServerError):
    """A model in the repository failed to load; names the model and Triton's reason."""

    def __init__(self, model: str, reason: str, log_path: Path):
        self.model = model
        self.reason = reason
        super().__init__(f"model '{model}' failed to load: {reason} (server log: {log_path})")


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(port: int, host: str = LOOPBACK) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {port} on {host} is already in use") from None
            raise


@dataclass
class ServerPorts:
    grpc: int
    http: int
    metrics: int

    @classmethod
    def pick(cls) -> "ServerPorts":
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        grpc, http, metrics = sorted(ports)
        return cls(grpc=grpc, http=http, metrics=metrics)

    def all(self) -> tuple[int, int, int]:
        return (self.grpc, self.http, self.metrics)


@dataclass
class TritonServer:
    """One `tritonserver` process on a model repository."""

    model_repository: Path
    workdir: Path
    name: str = "triton-0"
    ports: ServerPorts = field(default_factory=ServerPorts.pick)
    extra_args: list[str] = field(default_factory=list)
    install: TritonInstall = field(default_factory=TritonInstall.locate)
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    def command(self, backend_dir: Path) -> list[str]:
        return [
            str(self.install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.ports.grpc}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.ports.http}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def start(self) -> None:
        if self.process is not None:
            raise TritonServerError(f"{self.name} is already started")
        for port in self.ports.all():
            check_port_free(port)
        self.workdir.mkdir(parents=True, exist_ok=True)
        backend_dir = self.install.prepare_backend_dir(self.workdir / "backends")
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                self.command(backend_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.install.environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise self._startup_failure()
            if self.is_ready():
                return
            time.sleep(0.1)
        raise TritonServerError(
            f"{self.name} was not ready after {timeout:.0f} s (server log: {self.log_path})"
        )

    def _startup_failure(self) -> TritonServerError:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        model_failure = parse_model_load_failure(text)
        if model_failure:
            return ModelLoadError(*model_failure, log_path=self.log_path)
        if "Address already in use" in text or "address already in use" in text:
            return PortInUseError(f"{self.name}: a port of {self.ports.all()} is already in use")
        code = self.process.returncode if self.process else None
        tail = "\n".join(text.strip().splitlines()[-15:])
        return TritonServerError(f"{self.name} exited with code {code} before it was ready:\n{tail}")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, wait for a clean exit, then SIGKILL what is left."""
        if self.process is None:
            return
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Stubs that outlived the server, or a server that ignored SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version \d+: (.+)")


def parse_model_load_failure(log_text: str) -> tuple[str, str] | None:
    """Find the first model that failed to load in a Triton log: (model, Triton's reason)."""
    match = _FAILED_LOAD.search(log_text)
    if match:
        return match.group(1), match.group(2).strip()
    return None


def start_fleet(
    count: int,
    model_repository: Path,
    workdir: Path,
    extra_args: list[str] | None = None,
    timeout: float = 180.0,
) -> list[TritonServer]:
    """Start `count` servers at once and wait until all are ready; on any failure stop them all."""
    install = TritonInstall.locate()
    servers = [
        TritonServer(
            model_repository=Path(model_repository).resolve(),
            workdir=Path(workdir),
            name=f"triton-{index}",
            extra_args=list(extra_args or []),
            install=install,
        )
        for index in range(count)
    ]
    try:
        _ensure_distinct_ports(servers)
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout)
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[TritonServer]) -> None:
    for server in servers:
        server.stop()


def _ensure_distinct_ports(servers: list[TritonServer]) -> None:
    taken: set[int] = set()
    for server in servers:
        while taken.intersection(server.ports.all()):
            server.ports = ServerPorts.pick()
        taken.update(server.ports.all())


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when our process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
