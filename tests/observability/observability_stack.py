"""The observability tests' small real stack: Triton servers, the real gateway, and the real load
generator sending a bounded image and video load through it."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import tritonclient.grpc as grpcclient

from tritonfleet.processes import ChildProcess
from tritonfleet.triton_server import free_port

MODEL = "image_preprocess"


def model_ready(address: str) -> bool:
    client = grpcclient.InferenceServerClient(address)
    try:
        with contextlib.suppress(Exception):  # not up yet: any connection error means "try again"
            return client.is_model_ready(MODEL)
        return False
    finally:
        client.close()


def start_gateway(backends: list[str], workdir: Path) -> tuple[ChildProcess, str, str]:
    """The real gateway (static discovery over the servers); returns (process, grpc address, metrics address)."""
    grpc_port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{grpc_port}"
    args = [sys.executable, "-m", "tritonfleet.cli", "gateway", "--discovery", "static",
            "--listen", address, "--metrics-port", str(metrics_port)]
    for backend in backends:
        args += ["--backend", backend]
    gateway = ChildProcess("gateway", args, workdir / "gateway.log")
    try:
        gateway.wait_until(lambda: model_ready(address), 30.0, f"serving {MODEL}", interval=0.3)
    except BaseException:
        gateway.stop()
        raise
    return gateway, address, f"127.0.0.1:{metrics_port}"


def start_loadtest(workload: str, address: str, metrics_port: int, seconds: int, workdir: Path) -> ChildProcess:
    """The real load generator (`tritonfleet loadtest`), bounded in time, serving its live metrics."""
    args = [sys.executable, "-m", "tritonfleet.cli", "loadtest", workload, "--url", address,
            "--metrics-port", str(metrics_port), "--duration", str(seconds), "--workers", "1",
            "--resolution", "160x120", "--quiet", "--output", str(workdir / f"loadtest-{workload}.json")]
    if workload == "image":
        args += ["--model", MODEL, "--input", "FRAMES", "--datatype", "UINT8", "--rate", "20"]
    else:
        # Encoded video, as cameras send it: camera_stream's own metrics then have data too.
        args += ["--codec", "h264", "--streams", "2", "--fps", "5"]
    return ChildProcess(f"loadtest {workload}", args, workdir / f"loadtest-{workload}.log")
