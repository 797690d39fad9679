"""Where a camera request's time goes inside camera_stream as cameras are added, on this machine's CPU.

    .venv/bin/python -m bench.models.camera_phases [--streams 2 4 8] [--analysis-threads 1 2] [--rounds 3]
        [--fps 15] [--seconds 10] [--resolution 320x240] [--json FILE]

One Triton server per `--analysis-threads` value (the cpu profile's repository as rendered,
camera_stream only, its ANALYSIS_THREADS set to that value), all up for the whole benchmark. Each
round loads every server with every camera count in turn, so the values interleave (`tritonfleet
loadtest video --codec h264`, synthetic source, open loop), and reads the model's own histogram `tritonfleet_camera_request_phase_seconds` before and
after each load: p50/p90/p99 of each phase (lane_wait, decode, analysis_wait, analyze, respond,
total) next to the load generator's end-to-end p50/p99 and late-or-dropped share. Medians over the
rounds. The quantiles come from the histogram's buckets, so they are as fine as its bounds. Also
timed, in this process: one call of the model's classifier (the pipeline camera_stream builds
with its default parameters) for 1, 2, 4 and 8 pictures of the run's size, which an analysis round
that classifies waits for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.gpu import camera_metrics
from bench.models.camera_batcher import MODEL, repository, run_load
from models.pipeline import build_from_parameters
from tritonfleet.triton_server import start_fleet, stop_all

PHASES = camera_metrics.REQUEST_PHASES


def one_load(server, args, streams: int, output: Path) -> dict:
    before = camera_metrics.read(server.metrics_url)
    run = run_load(server.grpc_url, argparse.Namespace(**{**vars(args), "streams": streams}), output)
    # The model publishes its counters at most once a second, after an analysis round: the last
    # second of a load may not be in `after` (the same for every level).
    phases = camera_metrics.request_phases(before, camera_metrics.read(server.metrics_url))
    return {**run, "phases": phases}


def classify_ms(resolution: str, repeats: int = 5) -> dict[int, float]:
    """Median ms of one classifier call for 1, 2, 4 and 8 pictures of `resolution` (WxH)."""
    width, height = (int(n) for n in resolution.split("x"))
    pipeline, _ = build_from_parameters({}, lambda name: name, torch.device("cpu"))
    frames = [torch.randint(0, 256, (height, width, 3), dtype=torch.uint8) for _ in range(8)]
    out = {}
    for count in (1, 2, 4, 8):
        pipeline.classify_frames(frames[:count])  # the first call allocates
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            pipeline.classify_frames(frames[:count])
            times.append((time.perf_counter() - began) * 1e3)
        out[count] = round(statistics.median(times), 1)
    return out


def medians(runs: list[dict]) -> dict:
    out = {key: round(statistics.median(r[key] for r in runs), 4)
           for key in ("p50_ms", "p99_ms", "late_or_dropped", "frames_per_s")}
    for phase in PHASES:
        figures = [r["phases"][phase] for r in runs if phase in r["phases"]]
        if figures:
            out[phase] = {q: round(statistics.median(f[q] for f in figures), 2) for q in ("p50_ms", "p90_ms", "p99_ms")}
    return out


def markdown(table: dict[str, dict]) -> str:
    lines = ["| cameras | analysis threads | frames/s | late or dropped | end to end p50 / p99 ms | "
             + " | ".join(f"{phase} p99 ms" for phase in PHASES) + " |",
             "| ---: | ---: | ---: | ---: | --- | " + " | ".join("---:" for _ in PHASES) + " |"]
    for key, row in table.items():
        streams, threads = key.split("x")
        cells = [str(row.get(phase, {}).get("p99_ms", "-")) for phase in PHASES]
        lines.append(f"| {streams} | {threads} | {row['frames_per_s']:.0f} | {row['late_or_dropped']:.1%} | "
                     f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--analysis-threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--resolution", default="320x240")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="camera-phases-"))
    servers = {}
    runs: dict[str, list[dict]] = {f"{streams}x{threads}": [] for streams in args.streams for threads in args.analysis_threads}
    try:
        for threads in args.analysis_threads:
            # No sequence-batcher delay, as the profiles have it.
            repo = repository(workdir / f"repo-{threads}", 0, {"ANALYSIS_THREADS": str(threads)})
            (servers[threads],) = start_fleet(1, repo, workdir / f"server-{threads}",
                                              extra_args=["--model-control-mode=explicit", f"--load-model={MODEL}"])
        for round_ in range(args.rounds):
            for streams in args.streams:
                for threads, server in servers.items():
                    run = one_load(server, args, streams, workdir / f"load-{streams}-{threads}-{round_}.json")
                    runs[f"{streams}x{threads}"].append(run)
                    print(json.dumps({"round": round_, "streams": streams, "analysis_threads": threads, **run}), flush=True)
    finally:
        stop_all(list(servers.values()))
    table = {key: medians(rs) for key, rs in runs.items()}
    classifier = classify_ms(args.resolution)
    result = {"classify_ms_by_pictures": classifier, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join([".venv/bin/python -m bench.models.camera_phases", *sys.argv[1:]]),
              "options": vars(args) | {"json": str(args.json) if args.json else None}, "runs": runs, "medians": table}
    print(markdown(table))
    print("classifier ms per call, by pictures:", classifier)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
