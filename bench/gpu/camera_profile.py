"""Where a camera frame's time goes inside the camera model, without Triton around it.

    PYTHONPATH=/tmp/gpu/site:. python3 -m bench.gpu.camera_profile --out FILE [--streams 30 60 120]

Runs `models.camera.CameraService` as one `camera_stream` instance does (NVDEC sessions in
`--threads` threads, the analysis and classification on the GPU, the per-frame figures copied to
the host), on the load generator's synthetic 1080p30 H.264 clip: every stream sends its next
access unit each round, in batches of `--batch` requests (several values: the fleet's executions
hold 1-6), as fast as the service takes them. Per variant (each NVDEC session on a CUDA stream of
its own or on the current one), batch and stream count: frames/s, the wall time of a step (p50,
p90, p99), and the ms per step and per frame in each of CameraService's phases: decoding, the
analysis (its kernels and their figures on the host, and classification), and the rest.
`--sync-phases` waits for the device after decoding and after classification, so each phase
carries its own device time. The first step (every stream's START with its
keyframe, when NVDEC makes a session's surfaces) is timed apart, as open_ms_per_stream; variant
`warm` gives every session a keyframe before that (the model's WARM_DECODERS).
`--processes P` runs P such services at once in processes of their own, the streams shared out,
as P model instances would: whether the rate grows with P tells a limit inside one process (its
GIL) from one of the device.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import torch

from loadtest.payloads import parse_resolution
from loadtest.video_source import load_clip
from models.camera import CameraAnalyzer, CameraRequest, CameraService, CameraStreams
from models.classifier import Classifier, ClassifierSettings
from models.pipeline import ImagePipeline
from models.video import VideoSettings
from models.video_decode import NvDecDecoder, PyAVDecoder, blank_keyframe

# Variant -> (device, codec -> decoder); "pyav" is the CPU path, for a smoke run anywhere.
VARIANTS = {
    "own-stream": lambda device: lambda codec: NvDecDecoder(codec, device, low_latency=True, own_stream=True),
    "current-stream": lambda device: lambda codec: NvDecDecoder(codec, device, low_latency=True, own_stream=False),
    "pyav": lambda device: PyAVDecoder,
    # Sessions sized for 1080p at creation and each given a grey keyframe ahead (WARM_DECODERS).
    "warm": lambda device: lambda codec: NvDecDecoder(codec, device, low_latency=True, max_size=(1080, 1920)),
}


def build(variant: str, streams: int, threads: int, size: tuple[int, int], sync: bool = False) -> tuple[CameraService, torch.device]:
    device = torch.device("cpu") if variant == "pyav" else torch.device("cuda", 0)
    pipeline = ImagePipeline(Classifier(ClassifierSettings(weights=None, seed=0, device=device)))
    sessions = CameraStreams(VARIANTS[variant](device), max_decoders=streams, idle_timeout_s=600)
    if variant == "warm":
        sessions.prepare("h264", streams, blank_keyframe("h264", *size))
    service = CameraService(sessions, CameraAnalyzer(pipeline, VideoSettings()), "h264", decode_threads=threads, device=device)
    service.warm_up(*size, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if sync:
        synced_phases(service, device)
    return service, device


def batches(requests: list[CameraRequest], size: int):
    for at in range(0, len(requests), size):
        yield requests[at : at + size]


PHASES = ("decode", "analyze", "respond")


def synced_phases(service: CameraService, device: torch.device) -> None:
    """Wait for the device at the end of decoding and of classification, so each phase's device work
    is counted in that phase and not in the next one that waits."""
    if device.type != "cuda":
        return
    decode, classify = service._decode, service.analyzers[0]._classify

    def decode_then_wait(*args):
        try:
            return decode(*args)
        finally:
            torch.cuda.synchronize(device)

    def classify_then_wait(chosen):
        classify(chosen)
        torch.cuda.synchronize(device)

    service._decode, service.analyzers[0]._classify = decode_then_wait, classify_then_wait


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def measure(service: CameraService, units: list[bytes], streams: int, batch: int, seconds: float) -> dict:
    began = time.perf_counter()
    for part in batches([CameraRequest(s + 1, [units[0]], None, True, False) for s in range(streams)], batch):
        service.step(part)
    opened_s = time.perf_counter() - began
    counters, times = service.counters, service.analyzers[0].times
    for phase in PHASES:
        setattr(counters, f"{phase}_s", 0.0)
    times.measure_s = times.classify_s = 0.0
    frames_before, steps_before, classified_before = counters.frames, counters.steps, times.classified
    errors, rounds, step_ms = 0, 0, []
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        rounds += 1
        unit = units[rounds % len(units)]  # the clip loops from its keyframe, as the load generator sends it
        for part in batches([CameraRequest(s + 1, [unit], None, False, False) for s in range(streams)], batch):
            at = time.perf_counter()
            errors += sum(isinstance(r, Exception) for r in service.step(part))
            step_ms.append((time.perf_counter() - at) * 1e3)
    elapsed = time.perf_counter() - began
    frames = counters.frames - frames_before
    steps = max(counters.steps - steps_before, 1)
    per_frame = {phase: round(getattr(counters, f"{phase}_s") / max(frames, 1) * 1e3, 3) for phase in PHASES}
    per_step = {phase: round(getattr(counters, f"{phase}_s") / steps * 1e3, 3) for phase in PHASES}
    per_step["analyze_kernels"] = round(times.measure_s / steps * 1e3, 3)
    per_step["analyze_classify"] = round(times.classify_s / steps * 1e3, 3)
    return {"streams": streams, "batch": batch, "open_ms_per_stream": round(opened_s / streams * 1e3, 1), "rounds": rounds,
            "frames": frames, "errors": errors, "frames_per_s": round(frames / elapsed),
            "streams_at_30fps": round(frames / elapsed / 30, 1), "steps": steps,
            "step_ms": {"p50": round(_percentile(step_ms, 0.5), 2), "p90": round(_percentile(step_ms, 0.9), 2),
                        "p99": round(_percentile(step_ms, 0.99), 2)},
            "classified_per_step": round((times.classified - classified_before) / steps, 3),
            "ms_per_step": per_step, "ms_per_frame": per_frame}


def one_process(variant: str, streams: int, threads: int, size, units, batch: int, seconds: float, ready, results,
                sync: bool = False) -> None:
    service, _ = build(variant, streams, threads, size, sync)
    try:
        ready.wait()
        results.put(measure(service, units, streams, batch, seconds))
    finally:
        service.close()


def in_processes(variant: str, streams: int, processes: int, threads: int, size, units, batch: int, seconds: float,
                 sync: bool = False) -> dict:
    """`processes` services measured at the same time, `streams` shared out; their figures summed."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes), context.Queue()
    shares = [streams // processes + (i < streams % processes) for i in range(processes)]
    workers = [context.Process(target=one_process, args=(variant, share, threads, size, units, batch, seconds, ready, results, sync))
               for share in shares]
    for worker in workers:
        worker.start()
    parts = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
    total = sum(part["frames_per_s"] for part in parts)
    median = sorted(parts, key=lambda part: part["step_ms"]["p50"])[len(parts) // 2]
    return {"streams": streams, "processes": processes, "batch": batch, "frames_per_s": total,
            "streams_at_30fps": round(total / 30, 1), "errors": sum(part["errors"] for part in parts),
            "step_ms": median["step_ms"], "ms_per_step": median["ms_per_step"], "per_process": parts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--streams", type=int, nargs="+", default=[30, 60, 120])
    parser.add_argument("--batch", type=int, nargs="+", default=[40],
                        help="requests per execution (the fleet's executions hold 1-5; max_batch_size bounds it)")
    parser.add_argument("--sync-phases", action="store_true",
                        help="wait for the device after decoding and after the analysis, so each phase carries its own device time")
    parser.add_argument("--threads", type=int, nargs="+", default=[16], help="DECODE_THREADS values to run")
    parser.add_argument("--processes", type=int, nargs="+", default=[1], help="services at once, in processes of their own")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--variants", nargs="+", default=["own-stream", "current-stream"], choices=list(VARIANTS))
    parser.add_argument("--resolution", default="1080p")
    args = parser.parse_args(argv)
    size = parse_resolution(args.resolution)
    units = load_clip("h264", "synthetic", args.resolution, 60, 30.0).units
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "batch": args.batch,
           "resolution": args.resolution, "clip_units": len(units), "runs": []}
    out["sync_phases"] = args.sync_phases
    for variant in args.variants:
        for threads in args.threads:
            for processes in args.processes:
                for batch in args.batch:
                    for streams in args.streams:
                        if processes > 1:
                            figures = in_processes(variant, streams, processes, threads, size, units, batch, args.seconds,
                                                   args.sync_phases)
                        else:
                            service, _ = build(variant, streams, threads, size, args.sync_phases)
                            try:
                                figures = measure(service, units, streams, batch, args.seconds)
                            finally:
                                service.close()
                        run = {"variant": variant, "threads": threads, **figures}
                        out["runs"].append(run)
                        print(json.dumps({k: v for k, v in run.items() if k != "per_process"}), flush=True)
                        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
