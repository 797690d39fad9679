"""The fuzz tests' hypothesis profile, chosen before any of them is collected (tests/fuzz/profiles.py),
and the one fleet the through-the-gateway cases share: two real Triton servers on the models bad input
is aimed at, a gateway in front of them."""

from __future__ import annotations

import shutil

import pytest

from tests.fuzz import profiles  # noqa: F401 - registers and loads the profile
from tests.gateway.helpers import TEST_REPOSITORY
from tritonfleet.paths import MODEL_REPOSITORY
from tritonfleet.proxies import GatewayProcess
from tritonfleet.triton_server import start_fleet, stop_all

# The gateway's own tests' models (a stateless one, a stateful one) and the project's image and camera models.
MODELS = [TEST_REPOSITORY / "add_one", TEST_REPOSITORY / "running_sum",
          MODEL_REPOSITORY / "image_preprocess", MODEL_REPOSITORY / "camera_stream"]
# Small enough that an oversize message costs the fuzzer little to send, far above every other request.
MAX_MESSAGE_BYTES = 4 << 20


@pytest.fixture(scope="package")
def fuzz_fleet(tmp_path_factory):
    repository = tmp_path_factory.mktemp("fuzz-models")
    for model in MODELS:
        shutil.copytree(model, repository / model.name, ignore=shutil.ignore_patterns("__pycache__"))
    servers = start_fleet(2, repository, tmp_path_factory.mktemp("fuzz-triton"))
    yield servers
    stop_all(servers)


@pytest.fixture(scope="package")
def fuzz_gateway(fuzz_fleet, tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz-gateway") / "gateway.log"
    with GatewayProcess([server.grpc_url for server in fuzz_fleet], log,
                        env={"TRITONFLEET_GATEWAY_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}) as gateway:
        yield gateway
