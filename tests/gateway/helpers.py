"""Helpers for the gateway tests: run the gateway (and the proxies it is compared with) as real
processes on loopback, and count what each Triton server actually served."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tritonfleet.triton_server import TritonServer, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_REPOSITORY = Path(__file__).resolve().parent / "model_repository"


def served(server: TritonServer, model: str) -> int:
    """Successful inferences of `model` on one server, from its own statistics."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)
    finally:
        client.close()
    return sum(int(entry["inference_stats"]["success"].get("count", 0)) for entry in stats["model_stats"])


def served_counts(servers: list[TritonServer], model: str) -> list[int]:
    return [served(server, model) for server in servers]


def add_one_inputs(values=(1.0, 2.0, 3.0)) -> list[grpcclient.InferInput]:
    data = np.asarray(values, dtype=np.float32)
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return [tensor]


def wait_ready(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode} before it was ready")
            with contextlib.suppress(Exception):
                if client.is_server_ready():
                    return
            time.sleep(0.1)
    finally:
        client.close()
    raise TimeoutError(f"{url} not ready after {timeout} s")


class GatewayProcess:
    """`tritonfleet gateway` (through gateway.cli) as a child process on a free loopback port."""

    def __init__(self, backends: list[str], log_path: Path, *extra: str, workers: int = 1,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        args = [sys.executable, "-m", "gateway.cli", "gateway", "--listen", self.url,
                "--metrics-port", str(self.metrics_port), "--workers", str(workers), *extra]
        for backend in backends:
            args += ["--backend", backend]
        env = dict(os.environ, TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S="0.2", **(env or {}))
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        try:
            wait_ready(self.url, process=self.process)
        except BaseException:
            self.stop()
            raise

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> "GatewayProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
