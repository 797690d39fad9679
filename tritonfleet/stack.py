"""The local stack's supervisor: start the services of a stack file in order, watch, stop.

A service's addresses are published as placeholders for the services after it: a `command`
service's argv may say `{triton.grpc}` (the Triton servers' gRPC addresses, comma-separated),
`{port.grpc}` (a free port picked for itself under the name `grpc`) or `{python}` (this
interpreter). A process that dies while the stack runs is restarted on the same ports, with a
growing pause, up to `MAX_RESTARTS` times.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tritonfleet.paths import REPO_ROOT
from tritonfleet.processes import ChildProcess, ProcessExited, accepts_connections
from tritonfleet.stack_config import ServiceSpec, StackConfig
from tritonfleet.triton_server import LOOPBACK, TritonServer, free_port, start_fleet, stop_all

log = logging.getLogger("tritonfleet.stack")

RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "tritonfleet.rules.yaml"
MAX_RESTARTS = 5
SETTLE_SECONDS = 1.0


class StackError(RuntimeError):
    pass


@dataclass
class Process:
    """One supervised non-Triton process."""

    name: str
    argv: list[str]
    log_path: Path
    ready_url: str | None = None
    ready_port: int | None = None
    env: dict[str, str] | None = None  # None: this process's environment
    child: ChildProcess | None = None
    _started_at: float = 0.0

    @property
    def process(self) -> subprocess.Popen | None:
        return self.child.process if self.child else None

    def start(self, timeout: float = 60.0) -> None:
        self.child = ChildProcess(self.name, self.argv, self.log_path, env=self.env)
        self._started_at = time.monotonic()
        try:
            self.child.wait_until(self._ready, timeout)
        except (ProcessExited, TimeoutError) as exc:
            self.stop()
            raise StackError(str(exc)) from None

    def _ready(self) -> bool:
        if self.ready_url:
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as reply:
                    return reply.status == 200
            except (urllib.error.URLError, OSError):
                return False
        if self.ready_port:
            return accepts_connections(f"{LOOPBACK}:{self.ready_port}")
        # Nothing to probe: a process that stays up for a moment counts as started.
        return time.monotonic() - self._started_at >= SETTLE_SECONDS

    def is_running(self) -> bool:
        return self.child is not None and self.child.is_running()

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@dataclass
class RunningService:
    """A started service: its processes, and the addresses it publishes to later services."""

    spec: ServiceSpec
    servers: list[TritonServer] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    published: dict[str, str] = field(default_factory=dict)
    metrics_targets: list[str] = field(default_factory=list)
    restarts: int = 0

    def members(self) -> list[TritonServer | Process]:
        return [*self.servers, *self.processes]

    def dead_members(self) -> list[TritonServer | Process]:
        return [m for m in self.members() if not m.is_running()]

    def stop(self) -> None:
        stop_all(self.servers)
        for process in self.processes:
            process.stop()


class Stack:
    """Runs a StackConfig. Use as a context manager, or call start() and stop()."""

    def __init__(self, config: StackConfig, workdir: Path, environment: dict[str, str] | None = None):
        self.config = config
        self.workdir = Path(workdir)
        # Added to the environment of every command service (the demo's TLS files for the gateway).
        self.environment = environment or {}
        self.services: list[RunningService] = []
        self.skipped: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for spec in self.config.services:
                reason = self._missing_requirement(spec)
                if reason and spec.optional:
                    self.skipped[spec.name] = reason
                    log.warning("skipping %s: %s", spec.name, reason)
                    continue
                if reason:
                    raise StackError(f"{spec.name}: {reason}")
                log.info("starting %s", spec.name)
                self.services.append(self._start_service(spec))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def watch(self, stop: threading.Event, poll_interval: float = 1.0) -> None:
        """Until `stop` is set: restart members that died, with a growing pause between restarts."""
        while not stop.wait(poll_interval):
            for service in self.services:
                for member in service.dead_members():
                    self._restart(service, member)

    def _restart(self, service: RunningService, member: TritonServer | Process) -> None:
        if service.restarts >= MAX_RESTARTS:
            raise StackError(f"{service.spec.name} died {service.restarts} times; giving up")
        service.restarts += 1
        pause = min(2.0 ** service.restarts, 30.0)
        log.warning("%s died; restarting in %.0f s (restart %d)", member.name, pause, service.restarts)
        time.sleep(pause)
        member.restart()

    # -- lookups -----------------------------------------------------------------------------

    def service(self, name: str) -> RunningService:
        for service in self.services:
            if service.spec.name == name:
                return service
        raise KeyError(name)

    def placeholders(self) -> dict[str, str]:
        # {python} is this interpreter, so services run the project's CLI from its own environment.
        values: dict[str, str] = {"python": sys.executable}
        for service in self.services:
            for key, value in service.published.items():
                values[f"{service.spec.name}.{key}"] = value
        return values

    def triton_servers(self) -> list[TritonServer]:
        return [s for service in self.services for s in service.servers]

    # -- starting each kind ------------------------------------------------------------------

    def _missing_requirement(self, spec: ServiceSpec) -> str | None:
        if spec.kind == "prometheus" and not shutil.which("prometheus"):
            return "the prometheus binary is not installed (make system installs it with apt-get)"
        if spec.kind == "command":
            known = self.placeholders()
            wanted = {key for arg in spec.argv for key in _PLACEHOLDER.findall(arg) if not key.startswith("port.")}
            missing = sorted(wanted - set(known))
            if missing:
                return f"needs {', '.join('{' + key + '}' for key in missing)}, which no started service publishes"
            program = self._fill(spec.argv[0], known)
            if not shutil.which(program) and not Path(program).exists():
                return f"{program} is not installed"
        return None

    def _start_service(self, spec: ServiceSpec) -> RunningService:
        starter = {"triton": self._start_triton, "command": self._start_command, "prometheus": self._start_prometheus}
        return starter[spec.kind](spec)

    def _start_triton(self, spec: ServiceSpec) -> RunningService:
        servers = start_fleet(spec.replicas, spec.model_repository, self.workdir / spec.name, list(spec.args))
        return RunningService(
            spec=spec,
            servers=servers,
            published={
                "grpc": ",".join(s.grpc_url for s in servers),
                "http": ",".join(s.http_url for s in servers),
                "metrics": ",".join(f"{LOOPBACK}:{s.ports.metrics}" for s in servers),
            },
            metrics_targets=[f"{LOOPBACK}:{s.ports.metrics}" for s in servers],
        )

    def _start_command(self, spec: ServiceSpec) -> RunningService:
        ports = {name: free_port() for name in spec.ports}
        own = {f"port.{name}": str(port) for name, port in ports.items()}
        values = {**self.placeholders(), **own}
        process = Process(
            name=spec.name,
            argv=[self._fill(arg, values) for arg in spec.argv],
            log_path=self.workdir / f"{spec.name}.log",
            ready_url=self._fill(spec.ready_url, values) if spec.ready_url else None,
            ready_port=next(iter(ports.values()), None),
            env={**os.environ, **self.environment} if self.environment else None,
        )
        process.start()
        published = {name: f"{LOOPBACK}:{port}" for name, port in ports.items()}
        targets = [published["metrics"]] if spec.metrics_path and "metrics" in published else []
        return RunningService(spec=spec, processes=[process], published=published, metrics_targets=targets)

    def _start_prometheus(self, spec: ServiceSpec) -> RunningService:
        port = free_port()
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.prometheus_config(spec), sort_keys=False))
        process = Process(
            name=spec.name,
            argv=[
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--web.enable-lifecycle",
            ],
            log_path=self.workdir / f"{spec.name}.log",
            ready_url=f"http://{LOOPBACK}:{port}/-/ready",
        )
        process.start()
        return RunningService(spec=spec, processes=[process], published={"http": f"{LOOPBACK}:{port}"})

    def prometheus_config(self, spec: ServiceSpec) -> dict:
        """One scrape job per service that has metrics, named after the service."""
        jobs = [
            {
                "job_name": service.spec.name,
                "metrics_path": service.spec.metrics_path or "/metrics",
                "static_configs": [{"targets": service.metrics_targets}],
            }
            for service in self.services
            if service.metrics_targets
        ]
        return {
            "global": {"scrape_interval": spec.scrape_interval, "evaluation_interval": spec.scrape_interval},
            # The alert rules the chart ships, so the local stack evaluates the same alerts.
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": jobs,
        }

    @staticmethod
    def _fill(text: str, values: dict[str, str]) -> str:
        def value(match: re.Match) -> str:
            key = match.group(1)
            if key not in values:
                raise StackError(f"unknown placeholder {{{key}}} in {text!r}; known: {sorted(values)}")
            return values[key]

        return _PLACEHOLDER.sub(value, text)


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.-]+)\}")
