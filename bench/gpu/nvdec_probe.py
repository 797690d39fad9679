"""PyNvVideoCodec on its own: what a session's start costs, and where one process's decode rate goes.

    PYTHONPATH=/tmp/gpu/site:. python3 -m bench.gpu.nvdec_probe --out FILE [--seconds 2]
        [--processes 8 --process-threads 12 16 --process-modes raw model --processes-only] [--mps]

On the load generator's synthetic 1080p30 H.264 clip (GOP 30, no B-frames), NVDEC sessions made
with `CreateDecoder` as the camera model makes them (low latency, device memory, a CUDA stream of
their own), measured without the model around them:

* `start`: ms to create a session, and for its first keyframe: on a fresh session (NVDEC makes
  the decoder when the first sequence header arrives), on a fresh one created with
  maxwidth/maxheight, and on a *warm* one (a session that already decoded a keyframe of that size
  and is handed a new camera's keyframe); alone, and 16 at once in threads;
* `rate`: frames/s for T threads of one session each, with (a) `Decode` alone, (b) `Decode` plus
  the model's copy out and stream synchronization (`NvDecDecoder.decode`), (c) k access units in
  one `Decode` call; and P processes of T threads doing (a) or (b) (`--process-threads`,
  `--process-modes`), the camera instances' layout;
* `gil`: how many Python loop iterations the main thread gets while 16 threads decode, against
  idle: near 1.0 means `Decode` lets go of the GIL while NVDEC works.
* `paced` (`--paced-fps 30 --paced-layouts 15x8 16x8`): P processes x T sessions, each session a
  camera decoding one access unit per 1/FPS slot through `NvDecDecoder.decode`, the cameras' starts
  spread evenly over one pass of the clip (so their keyframes do not coincide): each picture's
  latency from its slot's time to its decode done (behind its slots, a session decodes the next
  unit at once), and the share over one period.
  What NVDEC alone gives a fleet of cameras, without the model, Triton or the network around it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bench.gpu import mps
from loadtest.video_source import load_clip
from models.video_decode import NvDecDecoder, _current_cuda_context


def clip_units() -> list[bytes]:
    return load_clip("h264", "synthetic", "1080p", 60, 30.0).units


def session(nvc, stream: torch.cuda.Stream, max_size: tuple[int, int] | None = None):
    extra = {"maxwidth": max_size[1], "maxheight": max_size[0]} if max_size else {}
    return nvc.CreateDecoder(gpuid=0, codec=nvc.cudaVideoCodec.H264, cudacontext=_current_cuda_context(),
                             cudastream=stream.cuda_stream, usedevicememory=True,
                             latency=nvc.DisplayDecodeLatencyType.LOW, **extra)


def packet(nvc, data: bytes, keep: list):
    source = np.frombuffer(data, np.uint8)
    keep.append(source)
    p = nvc.PacketData()
    p.bsl, p.bsl_data = int(source.size), int(source.ctypes.data)
    p.decode_flag = int(nvc.VideoPacketFlag.ENDOFPICTURE)
    return p


def decode_raw(nvc, decoder, data: bytes) -> int:
    keep: list = []
    return len(decoder.Decode(packet(nvc, data, keep)))


def start_costs(nvc, units: list[bytes], repeats: int) -> dict:
    """ms per session: create, first keyframe fresh, fresh with max size, warm (reused)."""
    torch.cuda.init()
    out: dict[str, list[float]] = {"create_ms": [], "first_keyframe_ms": [], "first_keyframe_max_size_ms": [],
                                   "warm_keyframe_ms": [], "second_unit_ms": []}
    for _ in range(repeats):
        stream = torch.cuda.Stream()
        began = time.perf_counter()
        fresh = session(nvc, stream)
        out["create_ms"].append((time.perf_counter() - began) * 1e3)
        began = time.perf_counter()
        decode_raw(nvc, fresh, units[0])
        out["first_keyframe_ms"].append((time.perf_counter() - began) * 1e3)
        began = time.perf_counter()
        decode_raw(nvc, fresh, units[1])
        out["second_unit_ms"].append((time.perf_counter() - began) * 1e3)
        for unit in units[2:10]:
            decode_raw(nvc, fresh, unit)
        # The same session taking a new camera: its next unit is that camera's keyframe.
        began = time.perf_counter()
        decode_raw(nvc, fresh, units[0])
        out["warm_keyframe_ms"].append((time.perf_counter() - began) * 1e3)
        sized = session(nvc, torch.cuda.Stream(), (1080, 1920))
        began = time.perf_counter()
        decode_raw(nvc, sized, units[0])
        out["first_keyframe_max_size_ms"].append((time.perf_counter() - began) * 1e3)
        del fresh, sized
    return {k: round(float(np.median(v)), 2) for k, v in out.items()}


def concurrent_starts(nvc, units: list[bytes], threads: int) -> dict:
    """`threads` sessions created and given their first keyframe at once: wall ms for all."""
    barrier = threading.Barrier(threads + 1)
    spent: list[float] = []
    decoders: list = []

    def one():
        stream = torch.cuda.Stream()
        barrier.wait()
        began = time.perf_counter()
        decoder = session(nvc, stream)
        decode_raw(nvc, decoder, units[0])
        spent.append((time.perf_counter() - began) * 1e3)
        decoders.append(decoder)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    wall = (time.perf_counter() - began) * 1e3
    # The same count of warm sessions, each handed a new keyframe at once.
    began = time.perf_counter()
    pool = [threading.Thread(target=decode_raw, args=(nvc, d, units[0])) for d in decoders]
    for w in pool:
        w.start()
    for w in pool:
        w.join()
    warm_wall = (time.perf_counter() - began) * 1e3
    return {"threads": threads, "fresh_wall_ms": round(wall), "fresh_each_ms_median": round(float(np.median(spent))),
            "warm_wall_ms": round(warm_wall)}


def rate(nvc, units: list[bytes], threads: int, mode: str, seconds: float, per_call: int = 1) -> dict:
    """frames/s of `threads` threads, one session each, decoding the looping clip."""
    device = torch.device("cuda", 0)
    stop = threading.Event()
    counts = [0] * threads
    ready = threading.Barrier(threads + 1)
    # The clip's units grouped `per_call` to a Decode call, each group starting where the last ended.
    groups = [b"".join(units[i:i + per_call]) for i in range(0, len(units), per_call)]

    def worker(index: int):
        if mode == "model":
            decoder = NvDecDecoder("h264", device, low_latency=True)
            decoder.decode(units[0])
        else:
            decoder = session(nvc, torch.cuda.Stream())
            decode_raw(nvc, decoder, units[0])
        ready.wait()
        n = 1
        while not stop.is_set():
            if mode == "model":
                counts[index] += len(decoder.decode(units[n % len(units)]))
                n += 1
            else:
                keep: list = []
                p = packet(nvc, groups[n % len(groups)], keep)
                if per_call > 1:
                    p.decode_flag = 0
                counts[index] += len(decoder.Decode(p))
                n += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    before = sum(counts)
    began = time.perf_counter()
    time.sleep(seconds)
    frames = sum(counts) - before
    elapsed = time.perf_counter() - began
    stop.set()
    for w in workers:
        w.join()
    return {"threads": threads, "mode": mode, "per_call": per_call, "frames_per_s": round(frames / elapsed)}


def gil_share(nvc, units: list[bytes], threads: int, seconds: float) -> dict:
    """Main-thread loop iterations per s with `threads` decoding, over the same with none."""
    def spin(duration: float) -> float:
        n, began = 0, time.perf_counter()
        while time.perf_counter() - began < duration:
            n += 1
        return n / duration

    idle = spin(seconds / 2)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(rate(nvc, units, threads, "raw", seconds)))
    thread.start()
    time.sleep(1.0)  # the sessions' start
    busy = spin(seconds / 2)
    thread.join()
    return {"threads": threads, "main_thread_share": round(busy / idle, 3), "decode_frames_per_s": result.get("frames_per_s")}


def process_rate(units, threads, mode, seconds, ready, results):
    import PyNvVideoCodec as nvc

    torch.cuda.init()
    ready.wait()
    results.put(rate(nvc, units, threads, mode, seconds))


def in_processes(units: list[bytes], processes: int, threads: int, seconds: float, mode: str = "raw") -> dict:
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=process_rate, args=(units, threads, mode, seconds, ready, results))
               for _ in range(processes)]
    for w in workers:
        w.start()
    parts = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join()
    return {"processes": processes, "threads": threads, "sessions": processes * threads, "mode": mode,
            "frames_per_s": sum(p["frames_per_s"] for p in parts), "per_process": [p["frames_per_s"] for p in parts]}


def paced_camera(decoder, units, index: int, cameras: int, fps: float, seconds: float, warmup_s: float,
                 start_at: float) -> list[int]:
    """One camera's session at `fps`: latencies (us) from each slot's time to its picture decoded,
    of the slots after the first `warmup_s` (which must cover the cameras' staggered starts)."""
    period = 1.0 / fps
    # Cameras start spread over one pass of the clip, as cameras that joined at different times are:
    # started together, every camera's keyframe would land in the same period.
    first = start_at + period * len(units) * index / cameras
    latencies: list[int] = []
    slot = 0
    while True:
        scheduled = first + slot * period
        if scheduled - start_at > warmup_s + seconds:
            return latencies
        wait = scheduled - time.time()
        if wait > 0:
            time.sleep(wait)
        decoder.decode(units[(slot + 1) % len(units)])
        if scheduled - start_at >= warmup_s:
            latencies.append(int((time.time() - scheduled) * 1e6))
        slot += 1


def paced_process(units, rank, processes, threads, fps, seconds, ready, results):
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    cameras = processes * threads
    decoders = [NvDecDecoder("h264", torch.device("cuda", 0), low_latency=True) for _ in range(threads)]
    for decoder in decoders:  # every session past its first keyframe before any slot
        decoder.decode(units[0])
    ready.wait()
    # Every process passed the barrier within a few ms of the others; the slots start together.
    start_at = time.time() + 0.5
    out: list = [None] * threads

    def run(i: int):
        out[i] = paced_camera(decoders[i], units, rank * threads + i, cameras, fps, seconds, 2.5, start_at)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results.put([latency for part in out for latency in part])


def paced(units: list[bytes], processes: int, threads: int, fps: float, seconds: float) -> dict:
    """P x T camera sessions decoding at `fps`: each picture's latency from its slot, and the late share."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=paced_process, args=(units, rank, processes, threads, fps, seconds, ready, results))
               for rank in range(processes)]
    for w in workers:
        w.start()
    latencies = np.array([x for _ in workers for x in results.get(timeout=seconds + 120)], dtype=np.int64)
    for w in workers:
        w.join()
    period_us = 1e6 / fps
    p50, p90, p99, p999 = (float(np.percentile(latencies, q)) / 1e3 for q in (50, 90, 99, 99.9))
    return {"processes": processes, "threads": threads, "cameras": processes * threads, "fps": fps,
            "seconds": seconds, "pictures": int(latencies.size),
            "pictures_per_s": round(latencies.size / seconds), "latency_ms": {
                "p50": round(p50, 2), "p90": round(p90, 2), "p99": round(p99, 2), "p99.9": round(p999, 2),
                "max": round(float(latencies.max()) / 1e3, 2)},
            "late_share": round(float((latencies > period_us).mean()), 4)}


def measure(args, out: dict) -> None:
    import PyNvVideoCodec as nvc

    units = clip_units()
    out["clip_units"] = len(units)
    torch.cuda.init()
    torch.zeros(1, device="cuda")

    def save(key, value):
        out.setdefault(key, []).append(value)
        print(key, json.dumps(value), flush=True)
        args.out.write_text(json.dumps(out, indent=1))

    if not args.processes_only:
        save("start", start_costs(nvc, units, 5))
        for threads in (16, 40):
            save("concurrent_start", concurrent_starts(nvc, units, threads))
        for threads in args.threads:
            for mode in ("raw", "model"):
                save("rate", rate(nvc, units, threads, mode, args.seconds))
        for per_call in args.per_call:
            for threads in (1, 16):
                save("rate", rate(nvc, units, threads, "raw", args.seconds, per_call))
        save("gil", gil_share(nvc, units, 16, args.seconds))
    for processes in args.processes:
        for threads in args.process_threads:
            for mode in args.process_modes:
                save("processes", in_processes(units, processes, threads, args.seconds, mode))
    for layout in args.paced_layouts:
        processes, _, threads = layout.partition("x")
        save("paced", paced(units, int(processes), int(threads), args.paced_fps, args.seconds))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--per-call", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--processes", type=int, nargs="*", default=[2, 4])
    parser.add_argument("--process-threads", type=int, nargs="*", default=[16], help="sessions per process")
    parser.add_argument("--process-modes", nargs="*", choices=("raw", "model"), default=["raw"])
    parser.add_argument("--processes-only", action="store_true", help="only the runs in several processes")
    parser.add_argument("--paced-fps", type=float, default=30.0)
    parser.add_argument("--paced-layouts", nargs="*", default=[], metavar="PxT",
                        help="paced cameras: P processes of T sessions each")
    parser.add_argument("--mps", action="store_true", help="under CUDA MPS (bench/gpu/mps.py)")
    args = parser.parse_args(argv)
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "mps": args.mps}
    if not args.mps:
        measure(args, out)
        return 0
    out["mps_note"] = mps.start() or "control daemon started"
    # The MPS daemon quits only once no process holds a CUDA context on it, this one included: the
    # measurements run in a child, which has exited by the time the daemon is told to quit.
    child = multiprocessing.get_context("spawn").Process(target=measure, args=(args, out))
    try:
        child.start()
        child.join()
    finally:
        note = mps.stop()
    if note:
        print(note, flush=True)
    return child.exitcode or 0


if __name__ == "__main__":
    raise SystemExit(main())
