"""What Triton's sequence-batcher queue delay costs camera_stream, side by side on this machine's CPU.

    .venv/bin/python -m bench.models.camera_batcher [--delays 2000 0] [--rounds 3] [--streams 4]
        [--fps 15] [--seconds 10] [--json FILE]

`camera_stream` hands each request to its camera's lane as soon as an execution brings it, so a
batch buys it nothing, while the sequence batcher (oldest strategy) holds a request for up to
`max_queue_delay_microseconds` hoping for more. One Triton server per delay (the cpu profile's
repository, that delay in camera_stream's config; everything else as rendered) runs for the whole
benchmark; each round loads them one after the other with the same H.264 camera load
(`tritonfleet loadtest video`, synthetic source, open loop), so rounds interleave the delays.
Medians over the rounds of each delay's p50, p99, late share and Triton's queue time per request.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from google.protobuf import text_format

from bench.gpu.run_fleet import per_execution, triton_statistics
from loadtest.results import RunResult, summarize
from models.profiles import read_config
from tritonfleet.triton_server import start_fleet, stop_all

MODEL = "camera_stream"


def repository(folder: Path, delay_us: int, parameters: dict[str, str] | None = None) -> Path:
    """The cpu profile's repository with camera_stream's sequence-batcher delay at `delay_us`, as in
    the gpu profile no preferred batch sizes, and `parameters` (name -> string) set in its config."""
    subprocess.run([sys.executable, "-m", "tritonfleet.cli", "render-models", "--profile", "cpu", "--out", str(folder)],
                   check=True, capture_output=True)
    path = folder / MODEL / "config.pbtxt"
    config = read_config(path)
    oldest = config.sequence_batching.oldest
    oldest.max_queue_delay_microseconds = delay_us
    del oldest.preferred_batch_size[:]  # as in the gpu profile: a batch ends at max_batch_size or the delay
    for name, value in (parameters or {}).items():
        config.parameters[name].string_value = value
    path.write_text(text_format.MessageToString(config))
    return folder


def run_load(url: str, args, output: Path) -> dict:
    command = [sys.executable, "-m", "tritonfleet.cli", "loadtest", "video", "--url", url, "--model", MODEL,
               "--codec", "h264", "--source", "synthetic", "--resolution", args.resolution,
               "--streams", str(args.streams), "--fps", str(args.fps), "--duration", str(args.seconds),
               "--warmup", "2", "--ramp-s", "1", "--workers", "1", "--quiet", "--output", str(output)]
    before = triton_statistics(url, (MODEL,))
    subprocess.run(command, check=True, capture_output=True, timeout=args.seconds + 120)
    summary = summarize(RunResult.load(output))
    video = summary["video"]
    slots = summary["ok"] + video["dropped"]
    triton = per_execution(before, triton_statistics(url, (MODEL,))).get(MODEL, {})
    return {"p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"],
            "late_or_dropped": (video["late"] + video["dropped"]) / slots if slots else 1.0,
            "errors": summary["errors"], "frames_per_s": round(summary["throughput"], 1),
            "queue_ms": triton.get("queue_ms"), "requests_per_execution": triton.get("batch")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", type=int, nargs="+", default=[2000, 0], metavar="US")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--resolution", default="320x240")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="camera-batcher-"))
    servers = {}
    try:
        for delay in args.delays:
            (server,) = start_fleet(1, repository(workdir / f"repo-{delay}", delay), workdir / f"server-{delay}",
                                    extra_args=["--model-control-mode=explicit", f"--load-model={MODEL}"])
            servers[delay] = server
        runs: dict[int, list[dict]] = {delay: [] for delay in args.delays}
        for round_ in range(args.rounds):
            for delay, server in servers.items():
                run = run_load(server.grpc_url, args, workdir / f"load-{delay}-{round_}.json")
                runs[delay].append(run)
                print(json.dumps({"round": round_, "delay_us": delay, **run}), flush=True)
    finally:
        stop_all(list(servers.values()))
    medians = {delay: {key: round(statistics.median(r[key] for r in rs), 4)
                       for key in ("p50_ms", "p99_ms", "late_or_dropped", "frames_per_s", "queue_ms",
                                   "requests_per_execution") if all(r[key] is not None for r in rs)}
               for delay, rs in runs.items()}
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join([".venv/bin/python -m bench.models.camera_batcher", *sys.argv[1:]]),
              "options": vars(args) | {"json": str(args.json) if args.json else None}, "runs": runs, "medians": medians}
    print(json.dumps({"medians": medians}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
