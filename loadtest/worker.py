"""One worker process: its own event loop and gRPC channels, its share of the load, its own recorder.

The parent gives every worker the same start time (the monotonic clock is system-wide on Linux), so
their schedules interleave exactly and their timelines merge second by second.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from dataclasses import dataclass, field

import uvloop

from loadtest.channels import Channels, ClientTls
from loadtest.generators import Camera, CameraPlan, Unary, closed_loop, open_loop
from loadtest.live import LiveDelta
from loadtest.records import Recorder, RequestResult
from loadtest.shape import Shape, arrival_offsets_ns

TICK_S = 0.5
CONNECT_TIMEOUT_S = 15.0


@dataclass
class WorkerSpec:
    """Everything a worker needs, picklable: the parent builds one per worker."""

    workload: str  # "image" or "video"
    url: str
    bodies: list[bytes]
    shape: Shape  # image: rate or concurrency over time; video: its duration
    index: int = 0
    workers: int = 1
    loop: str = "open"  # image: "open" (rate) or "closed" (concurrency)
    poisson: bool = False
    seed: int = 0
    warmup_s: float = 0.0
    timeout_s: float = 30.0
    streams: int = 0  # video
    fps: float = 0.0
    video_mode: str = "stream"
    catch_up: object | None = None  # encoded video: loadtest.video_source.UnitRequests
    ramp_s: float = 0.0  # video: cameras start spread over this long (0: over one frame period)
    frames_in_flight: int = 1  # video: frames a camera has awaiting answers before it drops its next
    connections: int = 1  # gRPC channels (each its own TCP connection) this worker spreads calls over
    metadata: tuple[tuple[str, str], ...] = ()  # sent with every call
    tls: ClientTls | None = None  # TLS toward the target; None: plaintext
    correlation_base: int = field(default_factory=lambda: random.randrange(1, 2**31) << 16)

    def my_streams(self) -> list[int]:
        return list(range(self.index, self.streams, self.workers))

    def share(self, level: float) -> int:
        """This worker's part of a total concurrency."""
        total = int(level)
        return total // self.workers + (1 if self.index < total % self.workers else 0)


def worker_main(start_queue, report_queue) -> None:
    """Process entry point: take the spec, report ready, wait for the common start time, run, report."""
    spec = start_queue.get()
    try:
        uvloop.install()
        asyncio.run(_run(spec, start_queue, report_queue))
    except BaseException:  # noqa: BLE001 - the parent must hear about any failure, then it exits
        report_queue.put(("error", spec.index, traceback.format_exc()))


async def _run(spec: WorkerSpec, start_queue, report_queue) -> None:
    channels = Channels(spec.url, spec.connections, spec.metadata, spec.tls)
    try:
        await asyncio.wait_for(channels.ready(), timeout=CONNECT_TIMEOUT_S)
    except asyncio.TimeoutError:
        report_queue.put(("error", spec.index, f"cannot connect to {spec.url} within {CONNECT_TIMEOUT_S:.0f} s"))
        return
    report_queue.put(("ready", spec.index, None))
    t0_ns = await asyncio.get_running_loop().run_in_executor(None, start_queue.get)
    recorder = Recorder(measure_from_ns=t0_ns + int(spec.warmup_s * 1e9))
    live = LiveDelta()

    def emit(result: RequestResult) -> None:
        recorder.record(result)
        live.record(result)

    async def tick() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            report_queue.put(("tick", spec.index, live.take()))

    ticker = asyncio.create_task(tick())
    cpu_start = time.process_time()
    try:
        if spec.workload == "video":
            await _video(spec, channels, t0_ns, emit, live)
        elif spec.loop == "closed":
            await closed_loop(Unary(channels, spec.timeout_s), spec.bodies, spec.shape, spec.share, t0_ns, emit)
        else:
            offsets = arrival_offsets_ns(spec.shape, spec.poisson, spec.seed)[spec.index :: spec.workers]
            await open_loop(Unary(channels, spec.timeout_s), spec.bodies, offsets, t0_ns, emit)
    finally:
        ticker.cancel()
        await channels.close()
    report_queue.put(("tick", spec.index, live.take()))
    # The CPU this worker spent generating load (start-up left out): what the benchmark divides by.
    report_queue.put(("done", spec.index, {"recorder": recorder.to_dict(), "cpu_s": time.process_time() - cpu_start}))


async def _video(spec: WorkerSpec, channels, t0_ns: int, emit, live: LiveDelta) -> None:
    period_ns = int(1e9 / spec.fps)
    frames = int(spec.shape.duration_s * spec.fps)

    async def camera(stream: int) -> None:
        # Streams start spread over one frame period, as independent cameras would, or over the
        # ramp, as a fleet of cameras reconnecting after a restart does.
        spread_ns = int(spec.ramp_s * 1e9) or period_ns
        plan = CameraPlan(stream, spec.correlation_base + stream, spec.fps, frames,
                          t0_ns + spread_ns * stream // max(spec.streams, 1), spec.bodies, spec.catch_up)
        live.streams_active += 1
        try:
            await Camera(channels, plan, spec.video_mode, emit, spec.shape.duration_s + spec.timeout_s,
                         spec.frames_in_flight).run()
        finally:
            live.streams_active -= 1

    await asyncio.gather(*(camera(stream) for stream in spec.my_streams()))
