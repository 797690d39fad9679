"""The models' GPU benchmark in one bounded run: serve a rendered repository, load it, record.

    python -m bench.models.gpu_bench --repo RENDERED_GPU_REPO --out DIR [--budget-s 420]

Starts a real tritonserver on the repository (KIND_GPU instances), checks one answer of each
image and video model, then runs `bench.models.load` sweeps: 1080p JPEGs through image_pipeline
at several batch sizes and concurrencies, and 1080p camera streams at 30 FPS through
video_pipeline; then restarts with nvJPEG off (TRITONFLEET_GPU_JPEG=0, Pillow decoding on the CPU)
for the same image runs side by side. `--video-instances 1 3` runs only the video sweep, once per
video_pipeline instance count. Triton's own statistics (queue and compute time per frame) are
recorded after each video sweep. Each step is skipped when the time budget would run out;
results go to DIR/models-gpu.json as they come.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path


from bench.models.kserve_http import KServeClient
from bench.models.load import camera_picture, jpeg, median_run, panning_frames, run_images, run_video
from bench.record import Record
from tritonfleet.triton_install import TritonInstall
from tritonfleet.triton_server import TritonServerError, start_fleet, stop_all

# GPU tensors cross between the server and the Python stubs through this pool; the default 64 MB
# is less than a few batches of 1080p frames in flight.
SERVER_ARGS = ["--cuda-memory-pool-byte-size=0:2147483648"]


class Recorder(Record):
    """OUT/models-gpu.json; each run is tagged with its kind."""

    def __init__(self, out: Path, budget_s: float):
        super().__init__(out / "models-gpu.json", budget_s)

    def add(self, kind: str, **values) -> None:
        super().add({"kind": kind, **values})


def stub_numpy() -> str:
    """The numpy the Python-backend stubs will import (the 2.51 stub reads BYTES tensors only with numpy<2).

    Asked of the `python3` first on the servers' PATH, without PYTHONPATH, which the stub ignores.
    """
    env = TritonInstall.locate().environment()
    env.pop("PYTHONPATH", None)
    probe = "import numpy; print(numpy.__version__, numpy.__file__)"
    done = subprocess.run(["python3", "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    return (done.stdout or done.stderr).strip()


def sanity(url: str, rec: Recorder, model: str) -> bool:
    """One answer from `model`, recorded; False (and the error recorded) when it fails."""
    client = KServeClient(url)
    try:
        if model == "image_pipeline":
            out = client.infer(model, [("IMAGE", [jpeg(camera_picture(1080, 1920, 0))])], ["LABELS", "CLASS_IDS", "SCORES"])
            rec.note(f"{model} answer: {out}")
        else:
            frame = camera_picture(1080, 1920, 1)[None]
            for index in range(2):
                params = {"sequence_id": 1, "sequence_start": index == 0, "sequence_end": index == 1}
                out = client.infer(model, [("FRAME", frame)], ["MOTION", "CLASSIFIED", "FRAME_INDEX", "LABELS"], params)
                rec.note(f"{model} answer: {out}")
        return True
    except Exception as exc:  # recorded, and the run goes on with what works
        rec.note(f"{model} failed: {exc}")
        return False
    finally:
        client.close()


def with_video_instances(repo: Path, dest: Path, count: int) -> Path:
    """A copy of the repository whose video_pipeline has `count` GPU instances."""
    shutil.copytree(repo, dest, dirs_exist_ok=True)
    config = dest / "video_pipeline" / "config.pbtxt"
    text = config.read_text()
    head, sep, rest = text.partition("instance_group {\n  count: ")
    config.write_text(head + sep + str(count) + rest[rest.index("\n"):])
    return dest


def server_side(url: str, model: str) -> dict:
    """Triton's own averages for `model`: ms per request in queue and in each compute phase, and batch size."""
    client = KServeClient(url)
    try:
        stats = client.statistics(model)
    finally:
        client.close()
    infer = stats["inference_stats"]
    count = max(1, infer["success"]["count"])
    out = {f"{phase}_ms": round(infer[phase]["ns"] / count / 1e6, 3) for phase in ("queue", "compute_input", "compute_infer", "compute_output")}
    out["frames_per_execution"] = round(stats["inference_count"] / max(1, stats["execution_count"]), 2)
    return out


def image_sweep(url, rec, label, batches, concurrencies, seconds, repeat):
    images = [jpeg(camera_picture(1080, 1920, seed)) for seed in range(8)]
    rec.note(f"{label}: JPEG sizes {[len(i) for i in images]} bytes")
    for batch in batches:  # first calls of each shape autotune the kernels and pick cuDNN algorithms
        run_images(url, "image_pipeline", images, batch, 2, 4, 60)
    for batch in batches:
        for concurrency in concurrencies:
            if rec.left() < seconds * repeat + 20:
                rec.note(f"{label}: skipped batch {batch} concurrency {concurrency} (time budget)")
                continue
            runs = [run_images(url, "image_pipeline", images, batch, concurrency, 400, seconds) for _ in range(repeat)]
            rec.add(label, **asdict(median_run(runs)))


def video_sweep(url, rec, streams_list, seconds, repeat, label="video 1080p@30"):
    frames = panning_frames(1080, 1920, 30, step=0)
    # A still camera with a moving object: motion mostly under the threshold, as in most CCTV.
    for index, frame in enumerate(frames):
        frame[0, 400:560, 200 + 20 * index : 360 + 20 * index] = 255
    run_video(url, "video_pipeline", frames, 1, 30.0, 0.3)
    for streams in streams_list:
        if rec.left() < seconds * repeat + 20:
            rec.note(f"video: skipped {streams} streams (time budget)")
            continue
        runs = [run_video(url, "video_pipeline", frames, streams, 30.0, seconds) for _ in range(repeat)]
        rec.add(label, **asdict(median_run(runs)))
    rec.note(f"{label}: Triton's statistics over the sweep: {server_side(url, 'video_pipeline')}")


def serve(repo: Path, workdir: Path, rec: Recorder, env: dict[str, str]):
    os.environ.update(env)
    began = time.monotonic()
    try:
        servers = start_fleet(1, repo, workdir, extra_args=SERVER_ARGS, timeout=240)
    except TritonServerError as exc:
        rec.note(f"server did not start: {exc}")
        _keep_log(workdir / "triton-0.log", rec.path.parent / f"triton-failed-{workdir.name}.log")
        raise
    rec.note(f"server ready in {time.monotonic() - began:.0f} s with {env or 'defaults'}")
    return servers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=420)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 12], help="camera streams per video run")
    parser.add_argument("--video-instances", type=int, nargs="*", default=[], help="only video runs, once per video_pipeline instance count")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rec = Recorder(args.out, args.budget_s)
    rec.note(f"stub numpy: {stub_numpy()}")
    workdir = Path("/tmp/gpu-bench")
    if args.video_instances:
        for count in args.video_instances:
            repo = with_video_instances(args.repo, workdir / f"repo-video-{count}", count)
            servers = serve(repo, workdir / f"video-{count}", rec, {})
            try:
                video_sweep(servers[0].http_url, rec, args.streams, args.seconds, args.repeat, f"video 1080p@30, {count} instances")
            finally:
                stop_all(servers)
        return 0
    servers = serve(args.repo, workdir / "nvjpeg", rec, {})
    try:
        url = servers[0].http_url
        if sanity(url, rec, "video_pipeline"):
            video_sweep(url, rec, args.streams, args.seconds, args.repeat)
        if sanity(url, rec, "image_pipeline"):
            image_sweep(url, rec, "image 1080p JPEG, nvJPEG", [1, 8, 32], [1, 8, 32], args.seconds, args.repeat)
    finally:
        stop_all(servers)
        _keep_log(servers[0].log_path, args.out / "triton-nvjpeg.log")
    if rec.left() > 90:
        servers = serve(args.repo, workdir / "pillow", rec, {"TRITONFLEET_GPU_JPEG": "0"})
        try:
            image_sweep(servers[0].http_url, rec, "image 1080p JPEG, Pillow", [8, 32], [8, 32], args.seconds, args.repeat)
        finally:
            stop_all(servers)
            _keep_log(servers[0].log_path, args.out / "triton-pillow.log")
    return 0


def _keep_log(path: Path, dest: Path) -> None:
    if path.exists():
        dest.write_text("\n".join(path.read_text(errors="replace").splitlines()[-200:]))


if __name__ == "__main__":
    raise SystemExit(main())
