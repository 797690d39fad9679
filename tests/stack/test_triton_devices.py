"""One GPU per server: start_fleet's devices reach each tritonserver (and its stubs) as
CUDA_VISIBLE_DEVICES, and the GPU list the scale-out command hands out."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tritonfleet.gpus import parse_gpu_list, visible_devices
from tritonfleet.paths import REPO_ROOT
from tritonfleet.triton_install import TritonInstall
from tritonfleet.triton_server import TritonServer, start_fleet, stop_all
from tests.polling import wait_until

GATEWAY_REPOSITORY = REPO_ROOT / "tests" / "gateway" / "model_repository"
ONLY_ADD_ONE = ["--model-control-mode=explicit", "--load-model=add_one"]


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode(errors="replace").split("\0") if "=" in entry)


@pytest.mark.slow
def test_each_server_and_its_backend_stubs_see_only_their_device(tmp_path, triton_runs_here, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    servers = start_fleet(2, GATEWAY_REPOSITORY, tmp_path, extra_args=ONLY_ADD_ONE, devices=["1", "0"])
    try:
        for server, device in zip(servers, ["1", "0"]):
            assert server.device == device
            assert environ_of(server.process.pid)["CUDA_VISIBLE_DEVICES"] == device
            # add_one's Python-backend stub is the server's child: the model's own process sees the same.
            stubs = wait_until(lambda: psutil.Process(server.process.pid).children(recursive=True),
                               f"{server.name}'s backend stub")
            assert {environ_of(stub.pid).get("CUDA_VISIBLE_DEVICES") for stub in stubs} == {device}
    finally:
        stop_all(servers)


def test_a_server_without_a_device_keeps_the_callers_setting(tmp_path, monkeypatch):
    install = TritonInstall.locate()
    server = TritonServer(model_repository=GATEWAY_REPOSITORY, workdir=tmp_path, install=install)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert "CUDA_VISIBLE_DEVICES" not in server.environment()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert server.environment()["CUDA_VISIBLE_DEVICES"] == "2,3"
    server.device = "3"
    assert server.environment()["CUDA_VISIBLE_DEVICES"] == "3"


def test_start_fleet_needs_one_device_per_server(tmp_path):
    with pytest.raises(ValueError, match="2 servers need 2 devices, got 1"):
        start_fleet(2, GATEWAY_REPOSITORY, tmp_path, devices=["0"])


def test_the_gpu_list_reads_nvidia_smi():
    listing = ("GPU 0: NVIDIA H200 (UUID: GPU-5f1b0c1e-aaaa-bbbb-cccc-000000000000)\n"
               "GPU 1: NVIDIA H200 (UUID: GPU-5f1b0c1e-aaaa-bbbb-cccc-000000000001)\n")
    assert parse_gpu_list(listing) == ["0", "1"]
    assert parse_gpu_list("") == []


def test_the_gpu_list_follows_cuda_visible_devices_as_cuda_does():
    assert visible_devices("2,3") == ["2", "3"]
    assert visible_devices("GPU-5f1b, 1") == ["GPU-5f1b", "1"]
    # CUDA enumerates up to the first invalid entry, and "" or "-1" hides every GPU.
    assert visible_devices("1,-1,2") == ["1"]
    assert visible_devices("") == []
    assert visible_devices("-1") == []
