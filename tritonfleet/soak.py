"""A soak: steady mixed load through a gateway for a while, sampling what would show a leak.

The load is what a fleet serves all day, at fixed rates: unary image requests (`image_preprocess`,
a small JPEG), camera streams (`camera_stream` over ModelStreamInfer, one sequence per camera, H.264
access units of the load generator's synthetic clip, looped), and one client that connects, calls and
disconnects in a loop. Every `sample_s` the gateway process's RSS, open file descriptors and threads
are read (psutil), with the gateway's own gauges of client connections and calls (it has no gauge of
asyncio tasks: its tasks belong to connections and calls, which these count), and every failed call is
counted by its gRPC status. The report gives the growth after `warmup_s`: RSS in %, descriptors,
threads.

`bench/soak/run.py` runs it for minutes on its own fleet; tests/fuzz/test_soak_short.py for seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from loadtest.payloads import encode_jpeg, synthetic_image
from loadtest.video_source import load_clip
from tritonfleet.paths import MODEL_REPOSITORY
from tritonfleet.proxies import GatewayProcess
from tritonfleet.triton_server import start_fleet, stop_all

IMAGE_MODEL, CAMERA_MODEL = "image_preprocess", "camera_stream"
# Each client its own connection: grpc otherwise shares one between channels to the same address, and
# the reconnecting client would never open a connection of its own.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
GAUGES = ("tritonfleet_gateway_client_connections", "tritonfleet_gateway_client_streams",
          "tritonfleet_gateway_active_streams", "tritonfleet_gateway_buffered_bytes")


@dataclass(frozen=True)
class SoakLoad:
    """The steady load. The defaults are what this project's 2-core CI machine sustains with room to
    spare (the soak measures leaks, not capacity: an overloaded fleet's queues would grow anyway)."""

    image_rate: float = 4.0  # unary image requests a second
    image_size: str = "320x240"
    cameras: int = 2
    camera_fps: float = 3.0
    reconnect_interval_s: float = 0.5  # the reconnecting client's pause between its connections


@dataclass(frozen=True)
class SoakPlan:
    duration_s: float
    warmup_s: float
    sample_s: float = 10.0
    load: SoakLoad = field(default_factory=SoakLoad)


def soak_repository(destination: Path) -> Path:
    """The two models of the soak, copied from the project's repository."""
    for model in (IMAGE_MODEL, CAMERA_MODEL):
        shutil.copytree(MODEL_REPOSITORY / model, destination / model, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


@contextlib.contextmanager
def soak_fleet(workdir: Path, servers: int = 2):
    """Real Triton servers on the soak's models and a gateway in front of them."""
    fleet = start_fleet(servers, soak_repository(workdir / "models"), workdir / "triton")
    try:
        with GatewayProcess([server.grpc_url for server in fleet], workdir / "gateway.log") as gateway:
            yield gateway
    finally:
        stop_all(fleet)


class Failures:
    """Failed calls by kind of load and gRPC status, shared by the load threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self.examples: dict[str, str] = {}

    def add(self, kind: str, error: Exception) -> None:
        status = error.status() if isinstance(error, InferenceServerException) else type(error).__name__
        key = f"{kind}:{status}"
        with self._lock:
            self.counts[key] += 1
            self.examples.setdefault(key, str(error)[:300])

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def image_inputs(size: str) -> list[grpcclient.InferInput]:
    width, height = (int(part) for part in size.split("x"))
    tensor = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[encode_jpeg(synthetic_image(height, width, 0))]], dtype=np.object_))
    return [tensor]


def camera_inputs(unit: bytes) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("ACCESS_UNITS", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[unit]], dtype=np.object_))
    return [tensor]


def paced(rate: float, stop: threading.Event):
    """Ticks at `rate` a second on a fixed schedule (a late tick does not shift the ones after it)."""
    interval, next_tick = 1.0 / rate, time.monotonic()
    while not stop.is_set():
        yield
        next_tick += interval
        stop.wait(max(0.0, next_tick - time.monotonic()))


class Load:
    """The load threads of one soak, started together and stopped together."""

    def __init__(self, url: str, load: SoakLoad):
        self.url, self.load = url, load
        self.stop = threading.Event()
        self.failures = Failures()
        self.calls: Counter = Counter()
        self.images = image_inputs(load.image_size)
        self.clip = load_clip("h264", "synthetic", load.image_size, 30, load.camera_fps).units
        self.threads = [threading.Thread(target=self._images, name="soak-images", daemon=True),
                        threading.Thread(target=self._reconnecting, name="soak-reconnect", daemon=True)]
        self.threads += [threading.Thread(target=self._camera, args=(camera,), name=f"soak-camera-{camera}",
                                          daemon=True) for camera in range(1, load.cameras + 1)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _images(self) -> None:
        with grpcclient.InferenceServerClient(self.url, channel_args=OWN_CONNECTION) as client:
            for _ in paced(self.load.image_rate, self.stop):
                self._call("image", lambda: client.infer(IMAGE_MODEL, self.images, client_timeout=30))

    def _reconnecting(self) -> None:
        while not self.stop.is_set():
            with grpcclient.InferenceServerClient(self.url, channel_args=OWN_CONNECTION) as client:
                self._call("reconnect", lambda: client.infer(IMAGE_MODEL, self.images, client_timeout=30))
            self.stop.wait(self.load.reconnect_interval_s)

    def _call(self, kind: str, call) -> None:
        try:
            call()
            self.calls[kind] += 1
        except Exception as error:  # every failure is the soak's finding, counted by its status
            self.failures.add(kind, error)

    def _camera(self, camera: int) -> None:
        """One camera's sequence on one ModelStreamInfer stream, the clip looped, ended when the soak does."""
        answered = threading.Semaphore(0)

        def on_answer(result, error):
            if error is not None:
                self.failures.add("camera", error)
            else:
                self.calls["camera"] += 1
            answered.release()

        client = grpcclient.InferenceServerClient(self.url, channel_args=OWN_CONNECTION)
        client.start_stream(callback=on_answer)
        sent = 0
        try:
            for _ in paced(self.load.camera_fps, self.stop):
                unit = self.clip[sent % len(self.clip)]
                client.async_stream_infer(CAMERA_MODEL, camera_inputs(unit), sequence_id=camera,
                                          sequence_start=sent == 0)
                sent += 1
            client.async_stream_infer(CAMERA_MODEL, camera_inputs(self.clip[sent % len(self.clip)]),
                                      sequence_id=camera, sequence_end=True)
            sent += 1
            for _ in range(sent):  # every message is answered before the stream closes
                if not answered.acquire(timeout=60):
                    self.failures.add("camera", TimeoutError("a stream message was not answered"))
                    break
        finally:
            client.stop_stream()
            client.close()


def gateway_gauges(metrics_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = dict.fromkeys(GAUGES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in values:
                values[sample.name] += sample.value
    return values


def sample(process: psutil.Process, metrics_url: str, started: float, load: Load) -> dict:
    with process.oneshot():
        figures = {"t_s": round(time.monotonic() - started, 1), "rss_bytes": process.memory_info().rss,
                   "fds": process.num_fds(), "threads": process.num_threads()}
    figures.update({name.removeprefix("tritonfleet_gateway_"): value
                    for name, value in gateway_gauges(metrics_url).items()})
    figures["calls"] = dict(load.calls)
    figures["errors"] = dict(load.failures.counts)
    return figures


def growth(samples: list[dict], warmup_s: float) -> dict:
    """From the first sample after the warm-up to the last: RSS (and in %), descriptors, threads."""
    after = [s for s in samples if s["t_s"] >= warmup_s] or samples[-1:]
    first, last = after[0], samples[-1]
    return {
        "rss_at_warmup_bytes": first["rss_bytes"], "rss_at_end_bytes": last["rss_bytes"],
        "rss_max_after_warmup_bytes": max(s["rss_bytes"] for s in after),
        "rss_growth_percent": round(100.0 * (last["rss_bytes"] - first["rss_bytes"]) / first["rss_bytes"], 2),
        "fds_at_warmup": first["fds"], "fds_at_end": last["fds"], "fd_growth": last["fds"] - first["fds"],
        "threads_at_warmup": first["threads"], "threads_at_end": last["threads"],
        "thread_growth": last["threads"] - first["threads"],
    }


def run_soak(gateway: GatewayProcess, plan: SoakPlan, on_sample=None) -> dict:
    """Load `gateway` for `plan.duration_s`, sampling it; the report (plain data, JSON-ready)."""
    process = psutil.Process(gateway.pid)
    load = Load(gateway.url, plan.load)
    started = time.monotonic()
    samples = []
    load.start()
    try:
        while True:
            samples.append(sample(process, gateway.metrics_url, started, load))
            if on_sample is not None:
                on_sample(samples[-1])
            if time.monotonic() - started >= plan.duration_s:
                break
            time.sleep(max(0.0, started + len(samples) * plan.sample_s - time.monotonic()))
    finally:
        load.finish()
    # After the load: every connection and call of the soak has ended at the gateway.
    idle = sample(process, gateway.metrics_url, started, load)
    return {"plan": asdict(plan), "samples": samples, "after_load": idle, "growth": growth(samples, plan.warmup_s),
            "calls": dict(load.calls), "errors": dict(load.failures.counts),
            "error_examples": load.failures.examples}
