"""The observability tests' small real stack: Triton servers, the real gateway, a bounded load, and
the load generator's real live-metrics exporter (loadtest.live) fed by a small paced frame loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tritonfleet.triton_server import free_port

MODEL = "image_preprocess"
FPS = 20


def start_gateway(backends: list[str], workdir: Path) -> tuple[subprocess.Popen, str, str]:
    """The real gateway (static discovery over the servers); returns (process, grpc address, metrics address)."""
    grpc_port, metrics_port = free_port(), free_port()
    args = [sys.executable, "-m", "gateway.cli", "gateway", "--discovery", "static",
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


def frame_inputs(rng: np.random.Generator) -> list:
    frames = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    inputs = [grpcclient.InferInput("FRAMES", list(frames.shape), "UINT8")]
    inputs[0].set_data_from_numpy(frames)
    return inputs


def paced_frames(address: str, live, seconds: float, max_frames: int) -> int:
    """One camera stream at FPS through the gateway, each frame due 1/FPS after its slot; bounded
    by time and count. Results go into the load generator's live metrics. Returns frames answered."""
    from loadtest.records import DROPPED, OK, RequestResult

    client = grpcclient.InferenceServerClient(address)
    rng = np.random.default_rng(0)
    period_ns = int(1e9 / FPS)
    t0 = time.monotonic_ns()
    answered = 0
    live.add(0, {"statuses": {}, "buckets": [0] * len(live.buckets), "sum": 0.0, "late": 0,
                 "dropped": 0, "streams_active": 1})
    for slot in range(max_frames):
        scheduled = t0 + slot * period_ns
        if scheduled - t0 > seconds * 1e9:
            break
        now = time.monotonic_ns()
        if now < scheduled:
            time.sleep((scheduled - now) / 1e9)
        elif now - scheduled > period_ns:
            result = RequestResult(scheduled, 0, now, DROPPED, 0, period_ns)
            _record(live, result)
            continue
        sent = time.monotonic_ns()
        try:
            client.infer(MODEL, frame_inputs(rng))
            status = OK
            answered += 1
        except grpcclient.InferenceServerException as exc:
            status = (exc.status() or "UNKNOWN").replace("StatusCode.", "")
        _record(live, RequestResult(scheduled, sent, time.monotonic_ns(), status, 0, period_ns))
    return answered


def _record(live, result) -> None:
    from loadtest.live import LiveDelta

    delta = LiveDelta()
    delta.streams_active = 1
    delta.record(result)
    live.add(0, delta.take())
