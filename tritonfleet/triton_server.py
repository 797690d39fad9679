"""Start, watch and stop real `tritonserver` processes on this machine.

One `TritonServer` is one process with its own ports and log file. `start_fleet` starts several on
one model repository and gives them back only when every one is ready, or stops them all and raises;
given devices, each server sees only its own GPU (`CUDA_VISIBLE_DEVICES`), one server per GPU.
Every server runs in its own process group (Python-backend stubs are its children) and is asked to
die with its parent, so an interrupted test or a Ctrl-C leaves no `tritonserver` behind.
"""

from __future__ import annotations

import errno
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tritonfleet.processes import spawn, terminate, terminate_all
from tritonfleet.triton_install import TritonInstall

LOOPBACK = "127.0.0.1"


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
        # As Triton's own listeners do: the connections a crashed server left in TIME_WAIT do not hold
        # the port for a restart, a process listening on it does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    # The GPU this server may use (an index or UUID as CUDA_VISIBLE_DEVICES takes it); None leaves
    # the variable as this process has it (every GPU, or none on a CPU machine).
    device: str | None = None
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
        # A fresh log per start, so a failure report reads this start's lines only.
        self.log_path.unlink(missing_ok=True)
        self.process = spawn(self.command(backend_dir), self.log_path, env=self.environment())

    def environment(self) -> dict[str, str]:
        env = self.install.environment()
        if self.device is not None:
            # Triton and its stubs then number this GPU 0, so one repository and the same flags
            # (`--cuda-memory-pool-byte-size=0:...`) serve on every GPU.
            env["CUDA_VISIBLE_DEVICES"] = self.device
        return env

    def restart(self, timeout: float = 120.0) -> None:
        """Start again on the same ports (after a crash), and wait until ready."""
        self._start_again()
        self.wait_ready_or_start_again(timeout)

    def _start_again(self) -> None:
        """Stop what is left of the last start (stubs included) and start afresh."""
        self.stop()
        self.process = None
        self.start()

    def wait_ready_or_start_again(self, timeout: float = 120.0) -> None:
        """Wait until ready; a server that crashed while it loaded (`_crashed_starting`) is started
        again, up to START_ATTEMPTS starts in all, as the kubelet restarts a crashed container. A model
        that fails to load, a port in use, or a crash on the last start, raises."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self.wait_ready(timeout)
                return
            except TritonServerError:
                if attempt == START_ATTEMPTS or not self._crashed_starting():
                    raise
            self._start_again()

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

    def _crashed_starting(self) -> bool:
        """Whether the server, or a backend stub while its model loaded, crashed (a signal, or the C
        runtime's own words in the log), as opposed to refusing a model or a port."""
        if self.process is not None and self.process.returncode is not None and self.process.returncode < 0:
            return True
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return any(words in text for words in _CRASH_WORDS)

    def stop(self, grace: float = 15.0) -> None:
        """Stop the server and its backend stubs (the whole process group)."""
        terminate(self.process, grace)

    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_ready_or_start_again()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# Triton reports a model that fails in one of two ways: its config does not parse ("Poll failed
# for model directory"), or it parses and the model fails to load ("failed to load ... version").
_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version \d+: (.+?)\"?$", re.MULTILINE)
_FAILED_POLL = re.compile(r"Poll failed for model directory '([^']+)': (.+?)\"?$", re.MULTILINE)
_PROTO_ERROR = re.compile(r"Error parsing text-format inference\.ModelConfig: (.+)$", re.MULTILINE)


def parse_model_load_failure(log_text: str) -> tuple[str, str] | None:
    """Find the first model that failed to load in a Triton log: (model, Triton's reason)."""
    match = _FAILED_LOAD.search(log_text)
    if match:
        return match.group(1), match.group(2).strip()
    match = _FAILED_POLL.search(log_text)
    if match:
        reason = match.group(2).strip()
        detail = _PROTO_ERROR.search(log_text)
        if detail:
            reason = f"{reason}: {detail.group(1).strip()}"
        return match.group(1), reason
    return None


# Triton 2.51 now and then aborts while it starts (glibc's heap checks, a boost lock error, gRPC's
# poller on a bad descriptor: "epoll_wait error"), so a restart can meet a crash of its own.
START_ATTEMPTS = 4
# What the log of a server says when it or a backend stub crashed while models loaded: seen with
# Triton 2.51's Python backend when servers start side by side (a stub's heap corrupted while it
# imported torch; a lock of its shared memory thrown away).
_CRASH_WORDS = ("double free or corruption", "boost::interprocess::lock_exception", "Segmentation fault",
                "free(): invalid", "malloc(): ")


def start_fleet(
    count: int,
    model_repository: Path,
    workdir: Path,
    extra_args: list[str] | None = None,
    timeout: float = 180.0,
    devices: list[str] | None = None,
) -> list[TritonServer]:
    """Start `count` servers at once and wait until all are ready; on any failure stop them all.

    `devices`, one per server, gives server i the GPU devices[i] alone."""
    if devices is not None and len(devices) != count:
        raise ValueError(f"start_fleet: {count} servers need {count} devices, got {len(devices)}: {devices}")
    install = TritonInstall.locate()
    servers = [
        TritonServer(
            model_repository=Path(model_repository).resolve(),
            workdir=Path(workdir),
            name=f"triton-{index}",
            extra_args=list(extra_args or []),
            install=install,
            device=None if devices is None else str(devices[index]),
        )
        for index in range(count)
    ]
    try:
        _ensure_distinct_ports(servers)
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready_or_start_again(timeout)
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[TritonServer], grace: float = 15.0) -> None:
    """Stop the servers side by side (each unloads its models on SIGTERM, which takes seconds)."""
    terminate_all([server.process for server in servers], grace)


def _ensure_distinct_ports(servers: list[TritonServer]) -> None:
    taken: set[int] = set()
    for server in servers:
        while taken.intersection(server.ports.all()):
            server.ports = ServerPorts.pick()
        taken.update(server.ports.all())
