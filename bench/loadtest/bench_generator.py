"""Requests per CPU-second: this harness (one worker) against locust (one process), same server, same run.

Both drive the trivial `tiny_image` model on one real tritonserver, closed loop at the same number of
requests in flight, in alternating rounds. Each side counts the requests answered and the CPU seconds
its generating process spent while the load ran (start-up left out), so the figure is the request rate
one core of that generator can sustain, whichever side the server limits. A third column runs bare
grpc.aio calls with nothing recorded: the floor any Python gRPC sender stands on. Medians over rounds.

    .venv/bin/python bench/loadtest/bench_generator.py --rounds 3 --seconds 10 --concurrency 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from loadtest.payloads import TensorSpec, image_requests, synthetic_image  # noqa: E402
from loadtest.runs import ImageOptions, run_image  # noqa: E402
from loadtest.shape import Shape  # noqa: E402
from tritonfleet.triton_server import start_fleet, stop_all  # noqa: E402

REPO = ROOT / "tests" / "loadtest" / "model_repository"


def harness_round(url: str, body: bytes, seconds: float, concurrency: int) -> dict:
    result = run_image(ImageOptions(url=url, tensor=TensorSpec("tiny_image"), shape=Shape.constant(concurrency, seconds),
                                    loop="closed", warmup_s=0, workers=1, quiet=True), bodies=[body])
    answered = sum(result.recorder.statuses.values())
    cpu = result.generator_cpu_s
    return {"requests": answered, "cpu_s": cpu, "per_cpu_s": answered / cpu, "rate": answered / seconds}


def bare_grpc_round(url: str, body: bytes, seconds: float, concurrency: int) -> dict:
    """The floor: grpc.aio calls in a loop with nothing recorded, in this process, same concurrency."""
    import asyncio

    import grpc
    import uvloop

    async def run() -> int:
        channel = grpc.aio.insecure_channel(url)
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        await channel.channel_ready()
        end = time.monotonic() + seconds
        counts = [0] * concurrency

        async def user(slot: int) -> None:
            while time.monotonic() < end:
                await call(body)
                counts[slot] += 1

        await asyncio.gather(*(user(slot) for slot in range(concurrency)))
        await channel.close()
        return sum(counts)

    uvloop.install()
    cpu = time.process_time()
    requests = asyncio.run(run())
    cpu = time.process_time() - cpu
    return {"requests": requests, "cpu_s": cpu, "per_cpu_s": requests / cpu, "rate": requests / seconds}


def locust_round(url: str, body: bytes, seconds: float, concurrency: int, workdir: Path) -> dict:
    out = workdir / "locust.json"
    env = dict(os.environ, LOCUST_BENCH_BODY=body.hex(), LOCUST_BENCH_OUT=str(out))
    subprocess.run([sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")), "--headless",
                    "-u", str(concurrency), "-r", str(concurrency * 10), "-t", f"{int(seconds)}s", "--host", url,
                    "--only-summary", "--loglevel", "WARNING"],
                   env=env, check=False, cwd=workdir, capture_output=True)  # exits 1 on failures, counted below
    data = json.loads(out.read_text())
    return {"requests": data["requests"], "cpu_s": data["cpu_s"], "per_cpu_s": data["requests"] / data["cpu_s"],
            "rate": data["requests"] / data["wall_s"], "failures": data["failures"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    body = image_requests(TensorSpec("tiny_image"), [synthetic_image(224, 224, 0)])[0]
    with tempfile.TemporaryDirectory() as tmp:
        servers = start_fleet(1, REPO, Path(tmp) / "triton")
        try:
            url = servers[0].grpc_url
            harness, locust, bare = [], [], []
            for _ in range(args.rounds):
                harness.append(harness_round(url, body, args.seconds, args.concurrency))
                locust.append(locust_round(url, body, args.seconds, args.concurrency, Path(tmp)))
                bare.append(bare_grpc_round(url, body, args.seconds, args.concurrency))
        finally:
            stop_all(servers)
    h = statistics.median(r["per_cpu_s"] for r in harness)
    lo = statistics.median(r["per_cpu_s"] for r in locust)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores", "rounds": args.rounds, "seconds": args.seconds, "concurrency": args.concurrency,
        "harness_per_cpu_s": round(h), "locust_per_cpu_s": round(lo), "ratio": round(h / lo, 2),
        "bare_grpc_aio_per_cpu_s": round(statistics.median(r["per_cpu_s"] for r in bare)),
        "harness_rate": round(statistics.median(r["rate"] for r in harness)),
        "locust_rate": round(statistics.median(r["rate"] for r in locust)),
        "harness_rounds": harness, "locust_rounds": locust, "bare_rounds": bare,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
