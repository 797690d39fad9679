"""`tritonfleet loadtest image|video|sweep|report|compare`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from loadtest import report, runs
from loadtest.channels import ClientTls, parse_header
from loadtest.engine import LoadRunError
from loadtest.payloads import TensorSpec
from loadtest.peers import start_together
from loadtest.results import RunResult, merge_results
from loadtest.shape import Shape
from loadtest.sweep import SweepOptions, sweep_image, sweep_video
from loadtest.thresholds import THRESHOLDS_MISSED, Thresholds, check, flag

DEFAULTS = {"image": ("image_pipeline", "IMAGE", "BYTES"), "video": ("video_pipeline", "FRAME", "UINT8")}


EXAMPLES = {
    "loadtest": "tritonfleet loadtest image --url 127.0.0.1:8001 --rate 200 --duration 30 --max-p99-ms 50",
    "image": "tritonfleet loadtest image --url 127.0.0.1:8001 --rate 200 --duration 30 --max-p99-ms 50 "
             "--max-error-rate 0.001\n  tritonfleet loadtest image --url 127.0.0.1:8001 --concurrency 16 "
             "--connections 4 -H 'x-tenant: team-a'",
    "video": "tritonfleet loadtest video --url 127.0.0.1:8001 --streams 8 --fps 15 --duration 60 --min-fps 14.5 "
             "--max-dropped-frames 0",
    "sweep image": "tritonfleet loadtest sweep image --url 127.0.0.1:8001 --slo-ms 100 --start 50 --limit 2000",
    "sweep video": "tritonfleet loadtest sweep video --url 127.0.0.1:8001 --slo-ms 66 --start 2 --limit 64",
    "report": "tritonfleet loadtest report pod-*.json --format html -o report.html\n"
              "  tritonfleet loadtest report run.json --max-p99-ms 50   # gate CI on a saved run",
    "compare": "tritonfleet loadtest compare before.json after.json",
}


def _parser(commands, name: str, key: str | None = None, **kwargs) -> argparse.ArgumentParser:
    return commands.add_parser(name, epilog=f"example:\n  {EXAMPLES[key or name]}",
                               formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def register(subparsers) -> None:
    parser = _parser(subparsers, "loadtest", help="image and video load against a KServe v2 gRPC endpoint")
    commands = parser.add_subparsers(dest="loadtest_command", required=True)
    _image_args(_parser(commands, "image", help="images at a rate (open loop) or concurrency (closed loop)"))
    _video_args(_parser(commands, "video", help="N camera streams × FPS, with frame deadlines"))
    sweep = commands.add_parser("sweep", help="the highest rate or stream count that meets a p99 SLO",
                                epilog=f"example:\n  {EXAMPLES['sweep image']}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    workloads = sweep.add_subparsers(dest="workload", required=True)
    for name, add in (("image", _image_args), ("video", _video_args)):
        sub = _parser(workloads, name, f"sweep {name}")
        add(sub)
        sub.add_argument("--start", type=float, default=None, help="first level (req/s or streams)")
        sub.add_argument("--limit", type=float, required=True, help="highest level to try")
        sub.add_argument("--trial", type=float, default=6.0, help="seconds per trial")
        sub.set_defaults(func=_sweep)
    rep = _parser(commands, "report", help="render results (several are merged) as text, JSON or HTML; "
                                           "check thresholds on them")
    rep.add_argument("results", nargs="+", type=Path,
                     help="result files, or captured logs whose last line is a result (--print-result)")
    rep.add_argument("--format", choices=("text", "json", "html"), default="text")
    rep.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    _threshold_args(rep)
    rep.set_defaults(func=_report)
    compare = _parser(commands, "compare", help="several results side by side")
    compare.add_argument("results", nargs="+", type=Path)
    compare.set_defaults(func=_compare)


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    try:
        return parse_header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threshold_args(parser: argparse.ArgumentParser, workload: str | None = None) -> None:
    """The limits a run is checked against; `workload` None (report) offers every one."""
    group = parser.add_argument_group(
        "thresholds", f"A missed threshold is printed with how far off it was,\nand the exit status is "
                      f"{THRESHOLDS_MISSED} (the result is written first).")
    for name, text in (
        ("max_p99_ms", "p99 latency must be at most this, ms"),
        ("max_p50_ms", "p50 latency must be at most this, ms"),
        ("max_error_rate", "failed calls over calls that ended must be at most this share (0 to 1)"),
        ("min_throughput", "answered requests per second must be at least this"),
        ("min_fps", "video: every stream must have answered at least this many frames per second"),
        ("max_late_frames", "video: frames answered after their 1/FPS deadline, at most this many"),
        ("max_dropped_frames", "video: frames dropped because the previous one was in flight, at most"),
    ):
        if workload == "image" and name in Thresholds.VIDEO_ONLY:
            parser.set_defaults(**{name: None})
            continue
        group.add_argument(flag(name), dest=name, type=_non_negative, metavar="N", help=text)


def _common_args(parser: argparse.ArgumentParser, workload: str) -> None:
    model, tensor, datatype = DEFAULTS[workload]
    parser.add_argument("--url", required=True, help="gRPC host:port (gateway, Envoy or one Triton server)")
    parser.add_argument("--model", default=model)
    parser.add_argument("--input", default=tensor, help="the model's input name")
    parser.add_argument("--datatype", choices=("BYTES", "UINT8"), default=datatype,
                        help="BYTES sends JPEG-encoded images, UINT8 raw RGB")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--no-batch-dim", action="store_true", help="the model has max_batch_size 0")
    parser.add_argument("--resolution", default="480p", help="synthetic images/frames: 480p, 1080p, 4k or WxH")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    parser.add_argument("--connections", type=int, default=1,
                        help="gRPC connections per worker; its requests (or cameras) take them in turn")
    parser.add_argument("-H", "--header", dest="metadata", action="append", type=_header, default=[],
                        metavar="KEY:VALUE", help="gRPC metadata sent with every call (repeat for several)")
    _tls_args(parser)
    parser.add_argument("--api-key-file", type=Path, metavar="FILE",
                        help="send the API key in FILE (e.g. a Secret mount) as `authorization: Bearer <key>`")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load left out of the figures")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request deadline, seconds")
    parser.add_argument("--window", type=int, default=1, help="stability window, seconds")
    parser.add_argument("--slo-ms", type=float, default=0.0, help="p99 latency objective, ms")
    parser.add_argument("--metrics-url", action="append", default=[],
                        help="gateway or Triton metrics URL for each server's share (repeat for several)")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve this run's Prometheus metrics here")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="address to serve them on (0.0.0.0 in a pod)")
    parser.add_argument("--output", "-o", type=Path, default=Path(f"loadtest-{workload}.json"),
                        help="where to write the result JSON")
    parser.add_argument("--print-result", action="store_true",
                        help="also print the result as one JSON line, last, so it outlives a pod in its log")
    parser.add_argument("--html", type=Path, help="also write the HTML report here")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument("--wait-for-peers", default="", metavar="HOST,...",
                        help="start only once every host resolves (the other pods of an Indexed Job), "
                             "on the next multiple of --start-align-s seconds of wall-clock time")
    parser.add_argument("--peers-timeout", type=float, default=600.0, help="seconds to wait for the peers")
    parser.add_argument("--start-align-s", type=float, default=10.0, help="the peers' shared start beat, seconds")
    _threshold_args(parser, workload)


def _tls_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS", "any --tls-* flag implies --tls")
    group.add_argument("--tls", action="store_true", help="connect with TLS (trusting the system's roots)")
    group.add_argument("--tls-ca-file", metavar="PEM", help="trust this CA instead of the system's roots")
    group.add_argument("--tls-cert-file", metavar="PEM", help="mutual TLS: the client certificate chain")
    group.add_argument("--tls-key-file", metavar="PEM", help="mutual TLS: its private key")
    group.add_argument("--tls-server-name", metavar="NAME", help="name to check in the server's certificate "
                                                                 "(default: the host of --url)")


def client_tls(args) -> ClientTls | None:
    files = (args.tls_ca_file, args.tls_cert_file, args.tls_key_file, args.tls_server_name)
    if not (args.tls or any(files)):
        return None
    return ClientTls(*(value or "" for value in files))


def _image_args(parser: argparse.ArgumentParser) -> None:
    _common_args(parser, "image")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--rate", type=float, help="open loop: requests per second")
    level.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    parser.add_argument("--shape", help="stages such as '5s@100,10s@~400' (ramp with ~); overrides --duration")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of evenly spaced")
    parser.add_argument("--source", default="synthetic", help="'synthetic', 'skimage' or a folder of images")
    parser.add_argument("--images", type=int, default=8, help="distinct images to cycle through")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_image, workload="image")


def _video_args(parser: argparse.ArgumentParser) -> None:
    _common_args(parser, "video")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--mode", choices=("stream", "unary"), default="stream",
                        help="ModelStreamInfer per camera, or one ModelInfer per frame")
    parser.add_argument("--video-file", default="", help="decode frames from this file (needs PyAV or OpenCV)")
    parser.add_argument("--codec", choices=("h264", "hevc"), default="",
                        help="send encoded access units (model camera_stream) instead of raw frames")
    parser.add_argument("--source", default="synthetic",
                        help="'synthetic' or a video file; with --codec its packets are sent as they are")
    parser.add_argument("--clip-frames", type=int, default=30, help="frames in the clip that each stream loops")
    parser.add_argument("--miss-tolerance", type=float, default=0.01,
                        help="a stream is sustained when at most this share of its frames is late or dropped")
    parser.add_argument("--ramp-s", type=float, default=0.0,
                        help="start the streams spread over this many seconds (at most --warmup)")
    parser.add_argument("--frames-in-flight", type=int, default=1,
                        help="frames a camera sends ahead of its answers before it drops the next "
                             "(1: it waits for each answer; stream mode only for more)")
    parser.set_defaults(func=_video, workload="video")


def _tensor(args) -> TensorSpec:
    return TensorSpec(args.model, args.input, args.datatype, args.batch_size, not args.no_batch_dim)


def _common(args) -> dict:
    return {"url": args.url, "tensor": _tensor(args), "workers": args.workers, "warmup_s": args.warmup,
            "timeout_s": args.timeout, "window_s": args.window, "slo_ms": args.slo_ms,
            "metrics_urls": args.metrics_url, "metrics_port": args.metrics_port,
            "metrics_address": args.metrics_address, "quiet": args.quiet, "connections": args.connections,
            "metadata": _metadata(args), "tls": client_tls(args)}



def _metadata(args) -> tuple[tuple[str, str], ...]:
    """-H pairs, and the bearer metadata of --api-key-file; the key itself is never printed."""
    path = args.api_key_file
    if path is None:
        return tuple(args.metadata)
    if any(key == "authorization" for key, _ in args.metadata):
        raise ValueError("--api-key-file and -H authorization both set the key; give one")
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"--api-key-file {path}: {exc.strerror}") from None
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError(f"--api-key-file {path}: must hold one API key of visible ASCII characters")
    return (*args.metadata, ("authorization", f"Bearer {token}"))


def image_options(args) -> runs.ImageOptions:
    loop = "closed" if args.concurrency else "open"
    level = args.concurrency or args.rate or 100.0
    shape = Shape.parse(args.shape) if args.shape else Shape.constant(level, args.duration)
    return runs.ImageOptions(**_common(args), shape=shape, loop=loop, poisson=args.poisson, seed=args.seed,
                             source=args.source, resolution=args.resolution, images=args.images)


def _encoded_video_defaults(args) -> None:
    """With --codec the defaults are the camera model's: access units in, not raw frames."""
    if args.codec:
        model, tensor, _ = DEFAULTS["video"]
        args.model = "camera_stream" if args.model == model else args.model
        args.input = "ACCESS_UNITS" if args.input == tensor else args.input
        args.datatype = "BYTES"


def video_options(args) -> runs.VideoOptions:
    _encoded_video_defaults(args)
    video_file = args.video_file or ("" if args.source == "synthetic" else args.source)
    return runs.VideoOptions(**_common(args), streams=args.streams, fps=args.fps, duration_s=args.duration,
                             mode=args.mode, video_file=video_file, resolution=args.resolution,
                             clip_frames=args.clip_frames, miss_tolerance=args.miss_tolerance, codec=args.codec,
                             ramp_s=args.ramp_s, frames_in_flight=args.frames_in_flight)


def _thresholds(args) -> Thresholds:
    return Thresholds(**{name: getattr(args, name) for name in Thresholds.__dataclass_fields__})


def _gate(result: RunResult, thresholds: Thresholds) -> int:
    """Print every missed threshold; the exit status a CI job gates on."""
    misses = check(thresholds, result)
    for miss in misses:
        print(f"threshold {miss}", file=sys.stderr)
    if thresholds.asked and not misses:
        print(f"thresholds met: {', '.join(flag(name) for name in thresholds.asked)}", file=sys.stderr)
    return THRESHOLDS_MISSED if misses else 0


def _finish(result: RunResult, args, thresholds: Thresholds) -> int:
    result.save(args.output)
    report.render_text(result)
    if args.html:
        args.html.write_text(report.render_html(result))
    Console(stderr=True).print(f"result: {args.output}" + (f", report: {args.html}" if args.html else ""))
    status = _gate(result, thresholds)
    if args.print_result:
        print(result.to_json_line(), flush=True)
    return status


def _guarded(run):
    def wrapper(args) -> int:
        try:
            return run(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except LoadRunError as exc:
            print(f"load run failed: {exc}", file=sys.stderr)
            return 1
    return wrapper


def _workload_thresholds(args) -> Thresholds:
    thresholds = _thresholds(args)
    thresholds.require_workload(args.workload)
    return thresholds


def _start_with_peers(args) -> None:
    peers = [name for name in args.wait_for_peers.replace(",", " ").split() if name]
    if not peers:
        return
    if args.start_align_s <= 0 or args.peers_timeout < 0:
        raise ValueError("--start-align-s must be positive and --peers-timeout not negative")
    beat = start_together(peers, args.peers_timeout, args.start_align_s)
    print(f"{len(peers)} peers up; load starts at {beat:.0f} (Unix time)", file=sys.stderr)


@_guarded
def _image(args) -> int:
    thresholds = _workload_thresholds(args)
    _start_with_peers(args)
    return _finish(runs.run_image(image_options(args)), args, thresholds)


@_guarded
def _video(args) -> int:
    thresholds = _workload_thresholds(args)
    _start_with_peers(args)
    return _finish(runs.run_video(video_options(args)), args, thresholds)


@_guarded
def _sweep(args) -> int:
    """Thresholds, when given, are checked on the result of the level the sweep settles on."""
    if not args.slo_ms:
        raise ValueError("a sweep needs --slo-ms, the p99 latency to stay under")
    thresholds = _workload_thresholds(args)
    _start_with_peers(args)
    if args.workload == "image":
        options = image_options(args)
        start = args.start or 50.0
        search = SweepOptions(args.slo_ms, start, args.limit, args.trial)
        return _finish(sweep_image(options, search, runs.image_bodies(options)), args, thresholds)
    options = video_options(args)
    search = SweepOptions(args.slo_ms, args.start or 1, args.limit, args.trial)
    return _finish(sweep_video(options, search, runs.video_bodies(options)), args, thresholds)


@_guarded
def _report(args) -> int:
    thresholds = _thresholds(args)
    results = [RunResult.load(path) for path in args.results]
    result = results[0] if len(results) == 1 else merge_results(results)
    if args.format == "text":
        console = Console(file=args.output.open("w")) if args.output else Console()
        report.render_text(result, console)
    else:
        text = report.render_json(result) if args.format == "json" else report.render_html(result)
        if args.output:
            args.output.write_text(text)
        else:
            print(text)
    return _gate(result, thresholds)


@_guarded
def _compare(args) -> int:
    report.render_compare([(path.stem, RunResult.load(path)) for path in args.results])
    return 0
