"""The fleet every fault run starts: three real Triton servers on the gateway tests' repository, in
explicit model control (so one server's `slow` model can be reloaded 3x slower), and the gateway in
front of them with its deployed settings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from tritonfleet.paths import REPO_ROOT
from tritonfleet.proxies import GatewayProcess
from tritonfleet.triton_server import TritonServer, start_fleet, stop_all

REPOSITORY = REPO_ROOT / "tests" / "gateway" / "model_repository"
EXPLICIT = ["--model-control-mode=explicit", "--load-model=*"]
# The gateway as deployed (gateway/config.py defaults), health checks every second; GatewayProcess's
# own default (0.2 s) is the tests' quicker one.
GATEWAY_ENV = {"TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "1"}


@dataclass
class Fleet:
    servers: list[TritonServer]
    gateway: GatewayProcess | None
    workdir: Path

    @property
    def urls(self) -> list[str]:
        return [s.grpc_url for s in self.servers]


def start_servers(workdir: Path) -> list[TritonServer]:
    return start_fleet(3, REPOSITORY, workdir / "triton", extra_args=EXPLICIT)


@contextlib.contextmanager
def running_fleet(workdir: Path, gateway_args: tuple[str, ...] = (), gateway_env: dict | None = None,
                  with_gateway: bool = True):
    """Three servers and (unless `with_gateway` is False) a gateway over them; all stopped at the end,
    also on error."""
    servers = start_servers(workdir)
    fleet = Fleet(servers, None, workdir)
    try:
        if with_gateway:
            fleet.gateway = GatewayProcess(fleet.urls, workdir / "gateway.log", *gateway_args,
                                           env={**GATEWAY_ENV, **(gateway_env or {})})
        yield fleet
    finally:
        if fleet.gateway is not None:
            fleet.gateway.stop()
        stop_all(servers)


