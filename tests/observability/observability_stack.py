"""The observability tests' small real stack: Triton servers, the real gateway, and the real load
generator sending a bounded image and video load through it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tritonclient.grpc as grpcclient

from tritonfleet.triton_server import free_port

MODEL = "image_preprocess"


def start_gateway(backends: list[str], workdir: Path) -> tuple[subprocess.Popen, str, str]:
    """The real gateway (static discovery over the servers); returns (process, grpc address, metrics address)."""
    grpc_port, metrics_port = free_port(), free_port()
    args = [sys.executable, "-m", "tritonfleet.cli", "gateway", "--discovery", "static",
            "--listen", f"127.0.0.1:{grpc_port}", "--metrics-port", str(metrics_port)]
    for backend in backends:
        args += ["--backend", backend]
    log = open(workdir / "gateway.log", "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{grpc_port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {(workdir / 'gateway.log').read_text()[-2000:]}")
        try:
            client = grpcclient.InferenceServerClient(address)
            if client.is_model_ready(MODEL):
                return process, address, f"127.0.0.1:{metrics_port}"
        except Exception:  # noqa: BLE001 (not up yet: any connection error means "try again")
            pass
        time.sleep(0.3)
    stop_process(process)
    raise RuntimeError("the gateway did not report the model ready in 30 s")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_loadtest(workload: str, address: str, metrics_port: int, seconds: int, workdir: Path) -> subprocess.Popen:
    """The real load generator (`tritonfleet loadtest`), bounded in time, serving its live metrics."""
    args = [sys.executable, "-m", "tritonfleet.cli", "loadtest", workload, "--url", address,
            "--metrics-port", str(metrics_port), "--duration", str(seconds), "--workers", "1",
            "--resolution", "160x120", "--quiet", "--output", str(workdir / f"loadtest-{workload}.json")]
    if workload == "image":
        args += ["--model", MODEL, "--input", "FRAMES", "--datatype", "UINT8", "--rate", "20"]
    else:
        args += ["--streams", "2", "--fps", "5"]
    log = open(workdir / f"loadtest-{workload}.log", "wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
