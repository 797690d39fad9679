"""One real tritonserver on the project's model repository, shared by the serving tests of this folder.

Starting the server loads six Python-backend models (three ResNet-50s) and takes tens of seconds
on this machine's two cores, so the serving tests of this folder share one (package scope) instead of the
function-scoped `triton_fleet`, with the same orphan check afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tritonfleet.triton_server import start_fleet, stop_all

MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


@pytest.fixture(scope="package")
def model_server(tmp_path_factory):
    servers = start_fleet(1, MODEL_REPOSITORY, tmp_path_factory.mktemp("triton-models"))
    yield servers[0]
    stop_all(servers)
    try:
        os.killpg(servers[0].process.pid, 0)
    except ProcessLookupError:
        return
    pytest.fail(f"tritonserver process group {servers[0].process.pid} left running")


@pytest.fixture
def client(model_server):
    with grpcclient.InferenceServerClient(model_server.grpc_url) as connection:
        yield connection
