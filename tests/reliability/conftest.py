"""One fleet for the fault tests: three real Triton servers in explicit model control with only the
models these tests use (fewer Python-backend stubs: quicker to start, stop and restart)."""

from __future__ import annotations

import pytest

from tests.gateway.helpers import TEST_REPOSITORY
from tritonfleet.triton_server import start_fleet, stop_all

MODELS = ("add_one", "slow", "running_sum")


@pytest.fixture(scope="module")
def fault_fleet(tmp_path_factory):
    args = ["--model-control-mode=explicit", *(f"--load-model={name}" for name in MODELS)]
    servers = start_fleet(3, TEST_REPOSITORY, tmp_path_factory.mktemp("fault-fleet"), extra_args=args)
    yield servers
    stop_all(servers)
