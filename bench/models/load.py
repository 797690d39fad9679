"""Bounded load against the image and video models: images/s, frames/s and latency percentiles.

    python -m bench.models.load image --url 127.0.0.1:8000 --batch 1 4 --concurrency 1 8 --requests 200
    python -m bench.models.load video --url 127.0.0.1:8000 --streams 1 4 --fps 30 --seconds 10

`image`: closed loop, `concurrency` threads each sending `batch` 1080p JPEGs per request to
image_pipeline, until `requests` requests or `seconds` have passed. `video`: one thread per camera
stream, each frame sent at its scheduled time (open loop, 1/fps apart) as one sequence per stream
to video_pipeline; latency counts from the scheduled time, so a server that falls behind shows it.
Every run is bounded in requests and time. Figures are medians of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from bench.models.kserve_http import KServeClient

IMAGE_OUTPUTS = ["LABELS", "CLASS_IDS", "SCORES"]
VIDEO_OUTPUTS = ["MOTION", "CLASSIFIED", "LABELS"]


def run_threads(target, args) -> float:
    """Run `target(arg)` for every arg on its own thread; the seconds until the last one ends."""
    began = time.perf_counter()
    threads = [threading.Thread(target=target, args=(arg,)) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def camera_picture(height: int, width: int, seed: int) -> np.ndarray:
    """A synthetic photograph: gradients, seeded rectangles and sensor noise (noise keeps JPEGs realistic in size)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 255
    for _ in range(24):
        top, left = rng.integers(0, height * 3 // 4), rng.integers(0, width * 3 // 4)
        image[top : top + height // 5, left : left + width // 6] = rng.integers(0, 256, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class ImageRun:
    batch: int
    concurrency: int
    requests: int
    errors: int
    images_per_s: float
    p50_ms: float
    p99_ms: float


def run_images(url, model, images, batch, concurrency, max_requests, seconds) -> ImageRun:
    latencies, errors, lock = [], [0], threading.Lock()
    sent = [0]
    deadline = time.monotonic() + seconds

    def worker(seed: int):
        client = KServeClient(url)
        index = seed
        try:
            while time.monotonic() < deadline:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    sent[0] += 1
                payload = [images[(index + i) % len(images)] for i in range(batch)]
                index += batch
                start = time.perf_counter()
                try:
                    client.infer(model, [("IMAGE", payload)], IMAGE_OUTPUTS)
                except Exception:  # counted, and the run goes on: a benchmark reports failures
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
        finally:
            client.close()

    elapsed = run_threads(worker, range(concurrency))
    ms = [x * 1000 for x in latencies]
    return ImageRun(batch, concurrency, len(latencies), errors[0], len(latencies) * batch / elapsed, percentile(ms, 50), percentile(ms, 99))


@dataclass
class VideoRun:
    streams: int
    fps: float
    frames: int
    errors: int
    frames_per_s: float
    classified: int
    p50_ms: float
    p99_ms: float


def run_video(url, model, frames, streams, fps, seconds) -> VideoRun:
    count = max(2, int(fps * seconds))
    latencies, errors, classified, lock = [], [0], [0], threading.Lock()

    def stream(stream_id: int):
        client = KServeClient(url)
        start = time.perf_counter() + 0.05
        try:
            for index in range(count):
                scheduled = start + index / fps
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                params = {"sequence_id": stream_id, "sequence_start": index == 0, "sequence_end": index == count - 1}
                frame = frames[(index + stream_id) % len(frames)]
                try:
                    out = client.infer(model, [("FRAME", frame)], VIDEO_OUTPUTS, params)
                except Exception:  # counted; a dropped frame is a result too
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - scheduled)
                    classified[0] += bool(out["CLASSIFIED"][0])
        finally:
            client.close()

    elapsed = run_threads(stream, [1000 + i for i in range(streams)])
    ms = [x * 1000 for x in latencies]
    return VideoRun(streams, fps, len(latencies), errors[0], len(latencies) / elapsed, classified[0], percentile(ms, 50), percentile(ms, 99))


def median_run(runs):
    """The run with the median throughput (whole runs, so its percentiles belong together)."""
    key = (lambda r: r.images_per_s) if hasattr(runs[0], "images_per_s") else (lambda r: r.frames_per_s)
    return sorted(runs, key=key)[len(runs) // 2]


def panning_frames(height: int, width: int, count: int, step: int = 8) -> list[np.ndarray]:
    scene = camera_picture(height, width + step * count, seed=7)
    return [np.ascontiguousarray(scene[None, :, i * step : i * step + width]) for i in range(count)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["image", "video"])
    parser.add_argument("--url", default="127.0.0.1:8000", help="Triton HTTP address")
    parser.add_argument("--model", default=None)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="per run, at most")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run, at most")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    results = []
    if args.mode == "image":
        images = [jpeg(camera_picture(args.height, args.width, seed)) for seed in range(8)]
        model = args.model or "image_pipeline"
        run_images(args.url, model, images, 1, 1, 3, 60)  # warm-up: first-call allocations, cuDNN choices
        for batch in args.batch:
            for concurrency in args.concurrency:
                runs = [run_images(args.url, model, images, batch, concurrency, args.requests, args.seconds) for _ in range(args.repeat)]
                results.append(asdict(median_run(runs)))
                print(json.dumps(results[-1]), flush=True)
    else:
        frames = panning_frames(args.height, args.width, 30)
        model = args.model or "video_pipeline"
        run_video(args.url, model, frames, 1, args.fps, 0.2)
        for streams in args.streams:
            runs = [run_video(args.url, model, frames, streams, args.fps, args.seconds) for _ in range(args.repeat)]
            results.append(asdict(median_run(runs)))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"mode": args.mode, "args": vars(args), "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
