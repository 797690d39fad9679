"""The fleet on one GPU machine: the project's load generator -> the gateway -> Triton (KIND_GPU).

    PYTHONPATH=/tmp/gpu/site:. /tmp/gpu/stub-env/bin/python3 -m bench.gpu.run_fleet \\
        --repo /tmp/gpu/repository --out $OUT [--image-runs 1:32,64 8:16] [--camera-streams 60 120]

(after `bench/gpu/setup_device.sh`). Starts one tritonserver on the rendered gpu repository with
`tritonfleet.triton_server.start_fleet`, then `tritonfleet gateway` (static discovery of that
server, several worker processes), and runs `tritonfleet loadtest video --codec h264` (camera
streams through camera_stream, open loop at 30 FPS) and `tritonfleet loadtest image` (1080p JPEGs
through image_pipeline, closed loop) at each level twice in a row: straight at Triton's gRPC port and through the
gateway, so both see the same server state. After every run Triton's own per-model statistics
(queue and compute time per execution, batch size) are recorded with it, and the cores each part
used meanwhile (`bench/gpu/cpu_share.py`: Triton, its stubs, the gateway, the load generator and the
whole machine); `--py-spy SITE` samples two camera stubs during each camera run. Every step is bounded by
`--budget-s`; results go to OUT/fleet.json as they come (steps skipped for time are noted).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import shutil

import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from PIL import Image

from bench import record
from bench.gpu import camera_metrics, cpu_share, mps, py_spy
from bench.models.load import camera_picture
from loadtest.results import RunResult, summarize
from models.profiles import KINDS, read_config
from tritonfleet.processes import spawn, terminate
from tritonfleet.triton_server import free_port, start_fleet, stop_all

# GPU tensors cross between the server and the Python-backend stubs through this pool: the default
# 64 MB holds less than one dynamic batch of 1080p frames, and a full pool makes Triton copy to the host.
SERVER_ARGS = ["--cuda-memory-pool-byte-size=0:8589934592", "--pinned-memory-pool-byte-size=1073741824"]
IMAGE_MODELS = ("image_preprocess", "image_classifier", "image_postprocess")


class Record(record.Record):
    """The fleet's results file, OUT/fleet.json (OUT/fleet-LABEL.json with a label, whose runs' labels
    it prefixes), and the sessions of the parts whose CPU each run records."""

    def __init__(self, out: Path, budget_s: float, label: str = ""):
        self.label = label
        self.sessions: dict[str, int] = {}  # part name -> session id, for the CPU each run used
        super().__init__(out / (f"fleet-{label}.json" if label else "fleet.json"), budget_s)

    def add(self, run: dict, unprinted: tuple[str, ...] = ("triton", "command")) -> None:
        if self.label:
            run["label"] = f"{self.label}/{run['label']}"
        super().add(run, unprinted)


def tritonfleet(*args: str) -> list[str]:
    return [sys.executable, "-m", "tritonfleet.cli", *args]


def wait_ready(url: str, models: list[str], timeout: float) -> None:
    """Until the server (or the gateway in front of it) says every model is ready, or TimeoutError."""
    deadline = time.monotonic() + timeout
    with grpcclient.InferenceServerClient(url) as client:
        while time.monotonic() < deadline:
            try:
                if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready for {models} after {timeout:.0f} s")


def start_gateway(backend: str, workers: int, workdir: Path, models: list[str]):
    port = free_port()
    command = tritonfleet("gateway", "--listen", f"127.0.0.1:{port}", "--discovery", "static", "--backend", backend,
                          "--metrics-port", "0", "--workers", str(workers), "--log-level", "WARNING")
    process = spawn(command, workdir / "gateway.log")
    try:
        wait_ready(f"127.0.0.1:{port}", models, 60)
    except BaseException:
        terminate(process, 10)
        raise
    return process, f"127.0.0.1:{port}"


def triton_statistics(url: str, models: tuple[str, ...]) -> dict:
    """Triton's cumulative per-model figures: executions, inferences, ns in queue and compute."""
    out = {}
    with grpcclient.InferenceServerClient(url) as client:
        for model in models:
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
            infer = stats["inference_stats"]
            out[model] = {"executions": int(stats.get("execution_count", 0)), "inferences": int(stats.get("inference_count", 0)),
                          "requests": int(infer.get("success", {}).get("count", 0)),
                          **{f"{phase}_ns": int(infer.get(phase, {}).get("ns", 0))
                             for phase in ("queue", "compute_input", "compute_infer", "compute_output")}}
    return out


def per_execution(before: dict, after: dict) -> dict:
    """What one run added to Triton's statistics: executions, items per execution, and ms per request in each
    phase (Triton counts every request of a batch with the batch's whole compute time)."""
    out = {}
    for model, now in after.items():
        then = before.get(model, {})
        executions = now["executions"] - then.get("executions", 0)
        requests = now["requests"] - then.get("requests", 0)
        if executions <= 0 or requests <= 0:
            continue
        out[model] = {"executions": executions, "requests": requests,
                      "batch": round((now["inferences"] - then.get("inferences", 0)) / executions, 1),
                      **{phase.replace("_ns", "_ms"): round((now[phase] - then.get(phase, 0)) / requests / 1e6, 2)
                         for phase in ("queue_ns", "compute_input_ns", "compute_infer_ns", "compute_output_ns")}}
    return out


def loadtest(record: Record, workdir: Path, label: str, url: str, triton_url: str, models: tuple[str, ...],
             args: list[str], timeout: float, metrics_url: str | None = None, sample=None) -> None:
    """One load-test run and what the server, its camera model and each part's CPU did meanwhile;
    `sample(label)`, if given, starts py-spy recordings for the run and returns them."""
    output = workdir / f"{label}.json"
    before = triton_statistics(triton_url, models)
    camera_before = camera_metrics.read(metrics_url) if metrics_url else ""
    command = tritonfleet("loadtest", *args, "--url", url, "--output", str(output), "--quiet")
    cpu_before = cpu_share.read(record.sessions)
    began = time.monotonic()
    samplers = sample(label) if sample else []
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    wall_s = time.monotonic() - began
    for sampler in samplers:
        try:
            sampler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sampler.kill()
    run = {"label": label, "url": url, "command": " ".join(command[2:]), "wall_s": round(wall_s, 1),
           "rc": done.returncode, "cpu_cores": cpu_share.cores_used(cpu_before, cpu_share.read(record.sessions), wall_s)}
    if done.returncode != 0 or not output.exists():
        run["stderr"] = done.stderr[-2000:]
    else:
        summary = summarize(RunResult.load(output))
        summary.pop("stability", None)
        if "video" in summary:
            summary["video"].pop("per_stream", None)
        run["summary"] = summary
    run["triton"] = per_execution(before, triton_statistics(triton_url, models))
    if metrics_url:
        camera_after = camera_metrics.read(metrics_url)
        run["camera_steps"] = camera_metrics.per_step(camera_before, camera_after)
        run["camera_request_phases"] = camera_metrics.request_phases(camera_before, camera_after)
    record.add(run)


def write_pictures(folder: Path, count: int) -> None:
    """1080p camera-like pictures (gradients, boxes, sensor noise), losslessly: the load generator JPEG-encodes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        Image.fromarray(camera_picture(1080, 1920, seed)).save(folder / f"camera-{seed}.png")


def with_instances(repo: Path, dest: Path, overrides: list[str], extra: list[Path], camera_decoders: int = 0,
                   camera_parameters: list[str] = ()) -> Path:
    """A copy of the repository with MODEL=KIND:COUNT instance groups (to compare layouts in one run),
    `camera_decoders` cameras per camera_stream instance (0: as rendered), camera_stream's
    NAME=VALUE `camera_parameters` and the `extra` model folders beside its own."""
    if not overrides and not extra and not camera_decoders and not camera_parameters:
        return repo
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(repo, dest)
    for folder in extra:
        shutil.copytree(folder, dest / folder.name)
    for override in overrides:
        model, _, group = override.partition("=")
        kind, _, count = group.partition(":")
        path = dest / model / "config.pbtxt"
        config = read_config(path)
        del config.instance_group[:]
        config.instance_group.add(kind=KINDS[kind], count=int(count))
        path.write_text(text_format.MessageToString(config))
    path = dest / "camera_stream" / "config.pbtxt"
    if camera_decoders:
        path.write_text(text_format.MessageToString(camera_capacity(read_config(path), camera_decoders)))
    if camera_parameters:
        config = read_config(path)
        for parameter in camera_parameters:
            name, _, value = parameter.partition("=")
            config.parameters[name].string_value = value
        path.write_text(text_format.MessageToString(config))
    return dest


def camera_capacity(config, cameras: int):
    """camera_stream's config with `cameras` per instance, as the gpu profile ties them: that many
    decoder sessions (all made warm), decode threads, candidate sequences and requests a batch."""
    config.max_batch_size = cameras
    config.sequence_batching.oldest.max_candidate_sequences = cameras
    for name in ("MAX_DECODERS", "DECODE_THREADS", "WARM_DECODERS"):
        config.parameters[name].string_value = str(cameras)
    return config


def image_runs(record, workdir, direct, gateway, levels, duration, workers, batch, model):
    pictures = workdir / "pictures"
    write_pictures(pictures, 8)
    name = "" if model == "image_pipeline" else f"{model}-"
    common = ["image", "--model", model, "--resolution", "1080p", "--source", str(pictures), "--images", "8",
              "--batch-size", str(batch), "--duration", str(duration), "--warmup", "2", "--workers", str(workers)]
    # First calls of each batch shape compile kernels and choose cuDNN algorithms: kept out of the figures.
    models = IMAGE_MODELS if model == "image_pipeline" else (model,)
    loadtest(record, workdir, f"{name}image-b{batch}-warmup", direct, direct, models, [*common, "--concurrency", str(max(levels))], 180)
    for level in levels:
        for route, url in (("direct", direct), ("gateway", gateway)):
            if url is None:
                continue
            if record.left() < duration + 40:
                record.note(f"image: skipped concurrency {level} {route} (time budget)")
                continue
            loadtest(record, workdir, f"{name}image-b{batch}-c{level}-{route}", url, direct, models,
                     [*common, "--concurrency", str(level)], duration + 120)


def camera_runs(record, workdir, direct, gateway, levels, duration, workers, codec, source, gateway_first=False,
                ramp_s=0.0, warmup_s=2.0, metrics_url=None, sample=None, frames_in_flight=(1,)):
    """Each camera count at each `frames_in_flight` (labelled -fN when that is not 1), direct and through the gateway."""
    common = ["video", "--model", "camera_stream", "--codec", codec, "--source", source, "--resolution", "1080p",
              "--fps", "30", "--duration", str(duration), "--warmup", str(warmup_s), "--ramp-s", str(ramp_s),
              "--workers", str(workers), "--slo-ms", "100"]
    routes = (("direct", direct), ("gateway", gateway))
    for level in levels:
        for ahead in frames_in_flight:
            name = f"camera-{codec}-s{level}" + (f"-f{ahead}" if ahead != 1 else "")
            for route, url in reversed(routes) if gateway_first else routes:
                if url is None:
                    continue
                if record.left() < duration + warmup_s + 60:
                    record.note(f"camera: skipped {name} {route} (time budget)")
                    continue
                loadtest(record, workdir, f"{name}-{route}", url, direct, ("camera_stream",),
                         [*common, "--streams", str(level), "--frames-in-flight", str(ahead)],
                         duration + warmup_s + 180, metrics_url,
                         (lambda label: sample(label, ramp_s + warmup_s, duration)) if sample else None)


def stub_sampler(record: Record, out: Path, site: Path):
    """py-spy on two camera_stream stubs during each camera run, from its steady state on: one sampled
    only while holding the GIL, one on every thread that runs; None when py-spy did not travel."""
    executable = py_spy.binary(site)
    if executable is None:
        record.note("py-spy: not in the carry, no samples")
        return None

    def sample(label: str, delay_s: float, seconds: float) -> list[subprocess.Popen]:
        stubs = cpu_share.session_processes(record.sessions["triton"], cpu_share.STUB_COMMAND, "camera_stream")
        started = []
        for pid, gil in zip(stubs, (True, False)):
            name = f"pyspy-{label}-{'gil' if gil else 'cpu'}.txt"
            started.append(py_spy.record(executable, pid, delay_s, seconds, out / name, gil))
        return started

    return sample


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="the rendered gpu model repository")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gpu/fleet"))
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each load run")
    parser.add_argument("--gateway-workers", type=int, default=4)
    parser.add_argument("--load-workers", type=int, default=4, help="load generator processes")
    parser.add_argument("--image-runs", nargs="*", default=["1:32,64,128", "8:8,16,32"], metavar="BATCH:C1,C2",
                        help="images per request and the concurrencies (requests in flight) to run it at")
    parser.add_argument("--camera-streams", type=int, nargs="*", default=[], help="camera runs (needs camera_stream)")
    parser.add_argument("--camera-codec", default="h264")
    parser.add_argument("--camera-source", default="synthetic")
    parser.add_argument("--camera-ramp", type=float, default=0.0, help="cameras start spread over this many seconds")
    parser.add_argument("--camera-frames-in-flight", type=int, nargs="+", default=[1], metavar="N",
                        help="frames a camera sends ahead of its answers (loadtest video --frames-in-flight); "
                             "several values: each camera count at each")
    parser.add_argument("--camera-warmup", type=float, default=2.0,
                        help="seconds before the camera figures count (at least the ramp: every camera is in)")
    parser.add_argument("--gateway-first", action="store_true",
                        help="camera runs through the gateway before the direct ones (the target route gets the fresh server)")
    parser.add_argument("--models", nargs="*", default=[], help="load only these (and what their ensembles need)")
    parser.add_argument("--instances", nargs="*", default=[], metavar="MODEL=KIND:COUNT",
                        help="serve a copy of the repository with these instance groups")
    parser.add_argument("--camera-decoders", type=int, default=0, metavar="N",
                        help="cameras per camera_stream instance (decoders, threads, candidate sequences); 0: as rendered")
    parser.add_argument("--camera-parameters", nargs="*", default=[], metavar="NAME=VALUE",
                        help="camera_stream config parameters to set, e.g. ANALYSIS_THREADS=2")
    parser.add_argument("--no-gateway", action="store_true", help="direct runs only")
    parser.add_argument("--extra-models", type=Path, nargs="*", default=[], help="model folders served beside the repository's")
    parser.add_argument("--image-model", default="image_pipeline")
    parser.add_argument("--label", default="", help="prefix of this run's labels (several runs in one file)")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="SITE",
                        help="sample two camera_stream stubs with the py-spy unpacked in SITE during each camera run")
    parser.add_argument("--mps", action="store_true", help="run the model instances under CUDA MPS (bench/gpu/mps.py)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    record = Record(args.out, args.budget_s, args.label)
    began = time.monotonic()
    models = args.models or sorted(p.parent.name for p in args.repo.glob("*/config.pbtxt"))
    explicit = ["--model-control-mode=explicit", *(f"--load-model={m}" for m in models)] if args.models else []
    repo = with_instances(args.repo, args.workdir / f"repository-{args.label or 'main'}", args.instances, args.extra_models,
                          args.camera_decoders, args.camera_parameters)
    record.note(f"{args.label}: instances {args.instances or 'as rendered'}, "
                f"camera decoders {args.camera_decoders or 'as rendered'}, "
                f"camera parameters {args.camera_parameters or 'as rendered'}")
    args.workdir = args.workdir / args.label if args.label else args.workdir
    args.workdir.mkdir(parents=True, exist_ok=True)
    samples = args.workdir / "pyspy"
    if args.py_spy:
        samples.mkdir(exist_ok=True)
    if args.mps:
        record.note(f"mps: {mps.start() or 'control daemon started'}")
    servers = start_fleet(1, repo, args.workdir, extra_args=SERVER_ARGS + explicit, timeout=300)
    gateway = None
    try:
        direct = servers[0].grpc_url
        record.sessions["triton"] = os.getsid(servers[0].process.pid)
        record.note(f"triton ready in {time.monotonic() - began:.0f} s with {models}")
        if args.mps:
            record.note(f"mps servers: {mps.servers() or 'none'}")
        through = None
        if not args.no_gateway:
            gateway, through = start_gateway(direct, args.gateway_workers, args.workdir, models)
            record.sessions["gateway"] = os.getsid(gateway.pid)
            record.note(f"gateway ready at {through} with {args.gateway_workers} workers")
        if args.camera_streams:
            camera_runs(record, args.workdir, direct, through, args.camera_streams, args.duration, args.load_workers,
                        args.camera_codec, args.camera_source, args.gateway_first, args.camera_ramp, args.camera_warmup,
                        servers[0].metrics_url, stub_sampler(record, samples, args.py_spy) if args.py_spy else None,
                        args.camera_frames_in_flight)
        for spec in args.image_runs:
            batch, _, levels = spec.partition(":")
            image_runs(record, args.workdir, direct, through, [int(c) for c in levels.split(",")], args.duration,
                       args.load_workers, int(batch), args.image_model)
    finally:
        if gateway is not None:
            terminate(gateway, 10)
        stop_all(servers)
        if args.mps:
            record.note(f"mps: {mps.stop() or 'control daemon quit'}")
        if args.py_spy:
            py_spy.bundle(samples, args.out / (f"pyspy-{args.label}.json" if args.label else "pyspy.json"))
        for log in (servers[0].log_path, args.workdir / "gateway.log"):
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-300:])
                (args.out / (f"{args.label}-{log.name}" if args.label else log.name)).write_text(tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
