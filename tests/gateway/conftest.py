"""Fixtures of the gateway tests: one module-scoped fleet of three real Triton servers on the gateway's
small test repository, and a gateway process in front of it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repository root first on the path: the tests' helpers (tests/gateway/helpers.py) are not part of
# the installed package, and the installed `gateway` package must win over the `tests/gateway` folder
# of the same name.
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

from tests.gateway.helpers import TEST_REPOSITORY, GatewayProcess
from tritonfleet.triton_server import start_fleet, stop_all


@pytest.fixture(scope="module")
def fleet3(tmp_path_factory):
    """Three servers on tests/gateway/model_repository, shared by one module's tests."""
    servers = start_fleet(3, TEST_REPOSITORY, tmp_path_factory.mktemp("gateway-fleet"))
    yield servers
    stop_all(servers)


@pytest.fixture(scope="module")
def gateway3(fleet3, tmp_path_factory):
    """A gateway over the three servers."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with GatewayProcess([s.grpc_url for s in fleet3], log) as gateway:
        yield gateway
