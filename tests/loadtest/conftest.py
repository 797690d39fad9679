"""A real Triton server on this folder's tiny models, shared by the load tests of one module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonfleet.triton_server import start_fleet, stop_all

TINY_REPOSITORY = Path(__file__).resolve().parent / "model_repository"


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    servers = start_fleet(1, TINY_REPOSITORY, tmp_path_factory.mktemp("triton-loadtest"))
    yield servers[0]
    stop_all(servers)
