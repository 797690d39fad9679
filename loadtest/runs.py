"""The two workloads end to end: build payloads, run the workers, attach server shares, return a result."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone

from loadtest import payloads, server_share, video_source
from loadtest.channels import ClientTls, validate_metadata
from loadtest.engine import default_workers, run_workers
from loadtest.live import LiveMetrics, serve_metrics
from loadtest.results import RunResult
from loadtest.run_config import ImageConfig, RunConfig, VideoConfig
from loadtest.shape import Shape, Stage
from loadtest.worker import WorkerSpec


@dataclass
class CommonOptions:
    url: str
    tensor: payloads.TensorSpec
    workers: int = 0  # 0: one per core
    warmup_s: float = 1.0
    timeout_s: float = 30.0
    window_s: int = 1
    slo_ms: float = 0.0
    metrics_urls: list[str] = field(default_factory=list)  # gateway or Triton metrics, for server shares
    metrics_port: int = 0  # serve the harness's own metrics here; 0: off
    metrics_address: str = "127.0.0.1"
    quiet: bool = False
    connections: int = 1  # gRPC connections each worker spreads its requests over
    metadata: tuple[tuple[str, str], ...] = ()  # (key, value) sent with every call
    tls: ClientTls | None = None  # TLS toward the target; None: plaintext

    def __post_init__(self):
        if self.connections < 1:
            raise ValueError(f"--connections must be at least 1, got {self.connections}")
        validate_metadata(self.metadata)
        if self.tls is not None:
            self.tls.credentials()  # a file that cannot be read stops the run before any worker starts


@dataclass
class ImageOptions(CommonOptions):
    shape: Shape = field(default_factory=lambda: Shape.constant(100, 10))
    loop: str = "open"
    poisson: bool = False
    seed: int = 0
    source: str = "synthetic"
    resolution: str = "480p"
    images: int = 8


@dataclass
class VideoOptions(CommonOptions):
    streams: int = 4
    fps: float = 15.0
    duration_s: float = 10.0
    mode: str = "stream"
    video_file: str = ""
    resolution: str = "480p"
    clip_frames: int = 30
    codec: str = ""  # "h264" | "hevc": encoded access units (for camera_stream) instead of raw frames
    miss_tolerance: float = 0.01  # a stream is sustained when at most this share of its frames missed
    ramp_s: float = 0.0  # cameras start spread over this long, all inside the warm-up
    # Frames a camera may have awaiting answers; its next slot past that drops its frame. 1: a
    # camera waits for each answer; more: it streams on, as a camera forwarding RTSP does.
    frames_in_flight: int = 1


def image_bodies(options: ImageOptions) -> list[bytes]:
    images = payloads.load_images(options.source, max(options.images, options.tensor.batch_size), options.resolution)
    return payloads.image_requests(options.tensor, images)


def video_bodies(options: VideoOptions) -> list[bytes]:
    if options.codec:
        return video_source.unit_bodies(options.tensor, _clip(options))
    if options.video_file:
        frames = payloads.video_file_frames(options.video_file, options.clip_frames)
    else:
        height, width = payloads.parse_resolution(options.resolution)
        frames = payloads.synthetic_clip(height, width, options.clip_frames)
    return payloads.frame_bodies(options.tensor, frames)


def _clip(options: VideoOptions) -> video_source.EncodedClip:
    return video_source.load_clip(options.codec, options.video_file or "synthetic", options.resolution,
                                  options.clip_frames, options.fps)


def _catch_up(options: VideoOptions) -> video_source.UnitRequests | None:
    return video_source.UnitRequests(options.tensor, _clip(options)) if options.codec else None


def run_image(options: ImageOptions, bodies: list[bytes] | None = None) -> RunResult:
    if options.loop not in ("open", "closed"):
        raise ValueError(f"loop must be 'open' or 'closed', got {options.loop!r}")
    # The warm-up runs at the shape's first level before the measured shape starts.
    first = options.shape.stages[0].level
    shape = options.shape
    if options.warmup_s > 0:
        shape = Shape((Stage(options.warmup_s, first), *shape.stages))
    spec = WorkerSpec("image", options.url, bodies or image_bodies(options), shape, loop=options.loop,
                      poisson=options.poisson, seed=options.seed, warmup_s=options.warmup_s,
                      timeout_s=options.timeout_s, connections=options.connections, metadata=options.metadata,
                      tls=options.tls)
    config = ImageConfig(**_common_config(options), loop=options.loop, poisson=options.poisson,
                         shape=options.shape, source=options.source, resolution=options.resolution)
    return _run(spec, options, config)


def run_video(options: VideoOptions, bodies: list[bytes] | None = None) -> RunResult:
    if options.mode not in ("stream", "unary"):
        raise ValueError(f"video mode must be 'stream' or 'unary', got {options.mode!r}")
    if options.streams < 1 or options.fps <= 0:
        raise ValueError("video needs at least one stream and a positive FPS")
    if not 0 <= options.ramp_s <= options.warmup_s:
        # Measuring while cameras still join would mix their starts into the steady state.
        raise ValueError(f"--ramp-s must be between 0 and --warmup ({options.warmup_s}), got {options.ramp_s}")
    if options.frames_in_flight < 1 or (options.mode == "unary" and options.frames_in_flight > 1):
        # Separate unary calls of one sequence may reach the server in any order.
        raise ValueError(f"--frames-in-flight must be >= 1, and 1 with --mode unary, got {options.frames_in_flight}")
    shape = Shape.constant(options.streams, options.warmup_s + options.duration_s)
    spec = WorkerSpec("video", options.url, bodies or video_bodies(options), shape, warmup_s=options.warmup_s,
                      timeout_s=options.timeout_s, streams=options.streams, fps=options.fps,
                      video_mode=options.mode, catch_up=_catch_up(options), connections=options.connections, metadata=options.metadata,
                      tls=options.tls, ramp_s=options.ramp_s, frames_in_flight=options.frames_in_flight)
    config = VideoConfig(**_common_config(options), streams=options.streams, fps=options.fps, mode=options.mode,
                         duration_s=options.duration_s, miss_tolerance=options.miss_tolerance,
                         frames_in_flight=options.frames_in_flight,
                         source=" ".join(filter(None, (options.codec, options.video_file or f"synthetic {options.resolution}"))))
    return _run(spec, options, config)


def _common_config(options: CommonOptions) -> dict:
    return {"url": options.url, **dataclasses.asdict(options.tensor), "warmup_s": options.warmup_s,
            "window_s": options.window_s, "slo_ms": options.slo_ms, "timeout_s": options.timeout_s,
            "connections": options.connections, "metadata_keys": tuple(key for key, _ in options.metadata)}


def _run(spec: WorkerSpec, options: CommonOptions, config: RunConfig) -> RunResult:
    workload = config.KIND
    workers = options.workers or default_workers()
    if workload == "video":
        workers = min(workers, spec.streams)
    config = dataclasses.replace(config, workers=workers)
    live = LiveMetrics(workload, options.tensor.model)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    before = server_share.snapshot(options.metrics_urls, options.tensor.model) if options.metrics_urls else {}
    with contextlib.ExitStack() as stack:
        if options.metrics_port:
            server, _thread = serve_metrics(live, options.metrics_port, options.metrics_address)
            stack.callback(server.shutdown)
        recorder = run_workers(spec, workers, live, options.quiet)
    servers = {}
    if options.metrics_urls:
        after = server_share.snapshot(options.metrics_urls, options.tensor.model)
        servers = server_share.share(before, after, options.metrics_urls)
    return RunResult(workload, config, recorder, started, servers, generator_cpu_s=round(live.generator_cpu_s, 3))
