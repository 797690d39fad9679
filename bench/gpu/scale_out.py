"""Scale-out: N Triton servers, one per GPU, behind one gateway, for each N (issue #21).

    PYTHONPATH=/tmp/gpu/site:. /tmp/gpu/stub-env/bin/python3 -m bench.gpu.scale_out --repo /tmp/gpu/repository \\
        --gpus 1 2 4 8 --out $OUT --models image_preprocess image_classifier image_postprocess image_pipeline camera_stream \\
        --image-runs 8:16 --camera-streams 30 --gateway-workers auto
    .venv/bin/python -m bench.gpu.scale_out --cpu --gpus 1 2 --repo model_repository --models image_preprocess \\
        --image-model image_preprocess --image-source synthetic --resolution 64x48 --out /tmp/scale-out

(the first after `bench/gpu/setup_device.sh`, like bench.gpu.run_fleet; the second runs the same code
path on CPU servers). Starts max(N) servers at once through `tritonfleet.triton_server.start_fleet`,
server i on GPU i alone (CUDA_VISIBLE_DEVICES; with --cpu, CPU servers), warms every server up, then
for each N starts `tritonfleet gateway` with static discovery of servers 0..N-1 and runs
`tritonfleet loadtest` through it: images at BATCH per request and CONCURRENCY x N in flight (closed
loop), and STREAMS x N camera streams at 30 FPS (open loop). For every run it records images/s (or
streams sustained: <= 1% late or dropped frames), p50/p99, the requests each server's Triton counted
(its statistics before and after) and their spread from an even share, and the gateway's own CPU
(user + system time of its processes, from /proc through psutil) per request.

--gateway-workers: one count for every N, one per N, or `auto`: each N starts at the workers the
previous N needed and doubles them while the busiest gateway process was busy more than
--auto-busy of the load's time (the gateway then limits the run), up to the machine's cores.
Results: OUT/scale_out.json (every figure, the workers each N needed), OUT/scale_out.md (the tables;
scaling efficiency = throughput(N) / (N x throughput(smallest N))) and OUT/fleet-scale.json (the
load generator's summaries and Triton's per-execution figures of every run, as run_fleet writes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.gpu.run_fleet import (IMAGE_MODELS, SERVER_ARGS, Record, loadtest, start_gateway, triton_statistics,
                                 write_pictures)
from tritonfleet.gpus import list_gpus
from tritonfleet.processes import terminate
from tritonfleet.triton_server import TritonServer, start_fleet, stop_all

AUTO = "auto"
RESULTS = "scale_out.json"
TABLE = "scale_out.md"


@dataclass
class Load:
    """One workload of every step: images (BATCH per request, LEVEL in flight per server) or camera
    streams (LEVEL per server)."""

    kind: str
    batch: int
    level: int

    @property
    def name(self) -> str:
        return f"image-b{self.batch}-c{self.level}" if self.kind == "image" else f"camera-s{self.level}"

    def offered(self, servers: int) -> int:
        return self.level * servers


@dataclass
class Gateway:
    process: subprocess.Popen
    url: str
    workers: int


@dataclass
class Results:
    path: Path
    data: dict = field(default_factory=dict)

    def save(self) -> None:
        self.data["rows"] = with_efficiency(self.data["rows"])
        (self.path / RESULTS).write_text(json.dumps(self.data, indent=1))
        (self.path / TABLE).write_text("\n".join(tables(self.data)) + "\n")


def gateway_cpu_seconds(process) -> dict[int, float]:
    """User + system CPU seconds of the gateway and every process under it (its workers), by pid."""
    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    seconds = {}
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:  # ended between the listing and the read
            continue
        seconds[member.pid] = times.user + times.system
    return seconds


def cpu_used(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    return {pid: now - before.get(pid, 0.0) for pid, now in after.items()}


def spread(requests: dict[str, int]) -> float | None:
    """The largest distance of any server's request count from an even share, in % of that share."""
    total = sum(requests.values())
    if not requests or total <= 0:
        return None
    even = total / len(requests)
    return round(max(abs(count - even) for count in requests.values()) / even * 100, 1)


def requests_by_server(servers: list[TritonServer], model: str) -> dict[str, int]:
    return {server.name: triton_statistics(server.grpc_url, (model,))[model]["requests"] for server in servers}


def per_step(values: list[str], steps: list[int], what: str) -> dict[int, str]:
    """One value for every step, or one per step in order."""
    if len(values) == 1:
        return {n: values[0] for n in steps}
    if len(values) != len(steps):
        raise SystemExit(f"scale_out: --{what} takes one value or one per step ({len(steps)}), got {values}")
    return dict(zip(steps, values))


def load_arguments(load: Load, args, servers: int, load_workers: int, gateway_workers: int, pictures: Path) -> list[str]:
    # Several connections per gateway worker: SO_REUSEPORT spreads connections, not requests, over them.
    connections = max(1, math.ceil(4 * gateway_workers / load_workers))
    common = ["--duration", str(args.duration), "--warmup", str(args.load_warmup), "--workers", str(load_workers),
              "--connections", str(connections)]
    if load.kind == "camera":
        return ["video", "--model", "camera_stream", "--codec", args.camera_codec, "--source", args.camera_source,
                "--resolution", "1080p", "--fps", "30", "--slo-ms", str(args.camera_slo_ms),
                "--streams", str(load.offered(servers)), *common]
    source = str(pictures) if args.image_source == "camera" else args.image_source
    return ["image", "--model", args.image_model, "--resolution", args.resolution, "--source", source, "--images", "8",
            "--batch-size", str(load.batch), "--concurrency", str(load.offered(servers)), *common]


def measure(record: Record, args, load: Load, servers: list[TritonServer], step: list[TritonServer],
            gateway: Gateway, load_workers: int, workdir: Path, label: str, pictures: Path) -> dict | None:
    """One load run through the gateway, and what it cost each server and the gateway."""
    if record.left() < args.duration + 40:
        record.note(f"{label}: skipped (time budget)")
        return None
    model = args.image_model if load.kind == "image" else "camera_stream"
    before = requests_by_server(servers, model)
    cpu_before = gateway_cpu_seconds(gateway.process)
    try:
        loadtest(record, workdir, label, gateway.url, step[0].grpc_url, stats_models(model),
                 load_arguments(load, args, len(step), load_workers, gateway.workers, pictures),
                 args.duration + (180 if load.kind == "camera" else 120))
    except subprocess.TimeoutExpired:
        record.note(f"{label}: the load generator did not finish in time")
        return None
    cpu = cpu_used(cpu_before, gateway_cpu_seconds(gateway.process))
    after = requests_by_server(servers, model)
    taken = {name: after[name] - before[name] for name in after}
    run = record.data["runs"][-1]
    summary = run.get("summary") or {}
    total = sum(taken.values())
    # The gateway worked while the load ran, warm-up included: its busy share of that time.
    active_s = args.duration + args.load_warmup
    row = {"label": label, "servers": len(step), "kind": load.kind, "load": load.name, "batch": load.batch,
           "offered": load.offered(len(step)), "gateway_workers": gateway.workers, "load_workers": load_workers,
           "rc": run["rc"], "errors": summary.get("errors"),
           "p50_ms": summary.get("latency_ms", {}).get("p50"), "p99_ms": summary.get("latency_ms", {}).get("p99"),
           "requests_per_server": {s.name: taken[s.name] for s in servers},
           "spread_pct": spread({s.name: taken[s.name] for s in step}),
           "outside_step": sum(taken[s.name] for s in servers if s not in step),
           "gateway_cpu_s": round(sum(cpu.values()), 3), "gateway_requests": total,
           "gateway_cpu_us_per_request": round(sum(cpu.values()) / total * 1e6, 1) if total else None,
           "gateway_busiest_process": round(max(cpu.values(), default=0.0) / active_s, 3)}
    if load.kind == "image":
        row["images_per_s"] = round(summary.get("throughput", 0.0) * load.batch, 1)
        row["figure"] = row["images_per_s"]
        row["within_slo"] = (row["p99_ms"] is not None and row["p99_ms"] <= args.image_slo_ms) if args.image_slo_ms else None
    else:
        video = summary.get("video", {})
        row.update(frames_per_s=round(summary.get("throughput", 0.0), 1), sustained=video.get("sustained", 0),
                   late=video.get("late"), dropped=video.get("dropped"))
        row["figure"] = row["sustained"]
    return row


def stats_models(model: str) -> tuple[str, ...]:
    return IMAGE_MODELS + (model,) if model == "image_pipeline" else (model,)


def with_efficiency(rows: list[dict]) -> list[dict]:
    """Each row's scaling efficiency: its figure per server over the figure per server of the same load
    on the fewest servers measured (N = 1 when it ran)."""
    base = {}
    for row in sorted(rows, key=lambda r: r["servers"]):
        if row.get("figure"):
            base.setdefault(row["load"], row)
    for row in rows:
        first = base.get(row["load"])
        row["efficiency_base_servers"] = first["servers"] if first else None
        row["efficiency"] = (round(row["figure"] * first["servers"] / (row["servers"] * first["figure"]), 3)
                             if first and row.get("figure") is not None else None)
    return rows


def _number(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _slo(row: dict) -> str:
    within = row.get("within_slo")
    return "-" if within is None else ("yes" if within else "no")


COLUMNS = ("| servers | devices | gateway workers | load | offered | {figure} | p50 ms | p99 ms | errors | efficiency | "
           "requests per server | spread ± % | gateway CPU µs/request | busiest gateway process | p99 within SLO |")


def table_row(data: dict, row: dict, offered: str) -> str:
    image = row["kind"] == "image"
    devices = ",".join(data["devices"][: row["servers"]]) if data["devices"] else "cpu"
    load = f"{row['batch']}/request" if image else data["camera"]
    per_server = list(row["requests_per_server"].values())[: row["servers"]]
    cells = [row["servers"], devices, row["gateway_workers"], load, f"{row['offered']} {offered}",
             _number(row["figure"], 1 if image else 0), _number(row["p50_ms"], 1), _number(row["p99_ms"], 1),
             _number(row["errors"]), _number(row["efficiency"], 2), " / ".join(f"{n:,}" for n in per_server),
             _number(row["spread_pct"], 1), _number(row["gateway_cpu_us_per_request"], 0),
             f"{_number(row['gateway_busiest_process'] * 100, 0)}%", _slo(row)]
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def tables(data: dict) -> list[str]:
    lines = [f"{data['machine']}; {data['date']}", ""]
    for kind, figure, offered in (("image", "images/s", "in flight"), ("camera", "streams sustained", "streams")):
        rows = [r for r in data["rows"] if r["kind"] == kind]
        if not rows:
            continue
        lines += [COLUMNS.format(figure=figure), "| " + " | ".join(["---:"] * 15) + " |"]
        lines += [table_row(data, row, offered) for row in rows]
        lines.append("")
    lines += [f"- {note}" for note in data["notes"]]
    return lines


def devices_for(args, steps: list[int], record: Record) -> tuple[list[str] | None, list[int]]:
    """The GPU each server gets (None: CPU servers), and the steps this machine has the GPUs for."""
    if args.cpu:
        return None, steps
    gpus = list_gpus()
    if not gpus:
        raise SystemExit("scale_out: no GPU found (nvidia-smi -L lists none); --cpu runs CPU servers")
    for n in steps:
        if n > len(gpus):
            record.note(f"n={n}: skipped, this machine has {len(gpus)} GPUs ({', '.join(gpus)})")
    fits = [n for n in steps if n <= len(gpus)]
    return gpus[: max(fits, default=0)], fits


def start_step_gateway(servers: list[TritonServer], workers: int, workdir: Path, models: list[str]) -> Gateway:
    # The gateway appends to its log: a fresh one per start, so the log kept is this run's.
    (workdir / "gateway.log").unlink(missing_ok=True)
    process, url = start_gateway(",".join(s.grpc_url for s in servers), workers, workdir, models)
    return Gateway(process, url, workers)


def run_step(record: Record, results: Results, args, n: int, servers: list[TritonServer], loads: list[Load],
             workers: str, start_workers: int, load_workers: int, models: list[str], pictures: Path) -> int:
    """Every load through a gateway over servers 0..n-1; gives back the gateway workers the step used."""
    step = servers[:n]
    auto = workers == AUTO
    count = start_workers if auto else int(workers)
    tries = []
    for index, load in enumerate(loads):
        while True:
            workdir = args.workdir / f"n{n}-w{count}"
            gateway = start_step_gateway(step, count, workdir, models)
            try:
                row = measure(record, args, load, servers, step, gateway, load_workers, workdir,
                              f"n{n}-w{count}-{load.name}", pictures)
            finally:
                terminate(gateway.process, 10)
                keep_log(workdir / "gateway.log", args.out / f"gateway-n{n}-w{count}.log")
            if row is None:
                break
            # Only the first load chooses the count; the others run with it.
            saturated = row["gateway_busiest_process"] > args.auto_busy
            if auto and index == 0 and saturated and count * 2 <= (os.cpu_count() or 1):
                tries.append({"workers": count, "busiest": row["gateway_busiest_process"], "figure": row["figure"]})
                record.note(f"n={n}: {count} gateway workers, busiest {row['gateway_busiest_process']:.0%}: doubling")
                count *= 2
                continue
            results.data["rows"].append(row)
            results.save()
            break
    results.data["steps"].append({"servers": n, "gateway_workers": count, "auto": auto, "tries": tries,
                                  "load_workers": load_workers})
    results.save()
    return count


def keep_log(log: Path, dest: Path, lines: int = 200) -> None:
    if log.exists():
        dest.write_text("\n".join(log.read_text(errors="replace").splitlines()[-lines:]) + "\n")


def warm_up(record: Record, args, servers: list[TritonServer], loads: list[Load], workers: int, load_workers: int,
            models: list[str], pictures: Path) -> None:
    """One image run over every server, so no step's first requests pay for compiling kernels."""
    image = [load for load in loads if load.kind == "image"]
    if not image or args.warmup_s <= 0:
        return
    gateway = start_step_gateway(servers, workers, args.workdir / "warmup", models)
    try:
        load = image[0]
        arguments = load_arguments(load, argparse.Namespace(**{**vars(args), "duration": args.warmup_s}),
                                   len(servers), load_workers, workers, pictures)
        loadtest(record, args.workdir, f"warmup-{load.name}", gateway.url, servers[0].grpc_url,
                 stats_models(args.image_model), arguments, args.warmup_s + 120)
    finally:
        terminate(gateway.process, 10)


def parse_loads(args) -> list[Load]:
    loads = []
    for spec in args.image_runs:
        batch, _, levels = spec.partition(":")
        loads += [Load("image", int(batch), int(level)) for level in levels.split(",")]
    loads += [Load("camera", 1, streams) for streams in args.camera_streams]
    if not loads:
        raise SystemExit("scale_out: nothing to run (no --image-runs, no --camera-streams)")
    return loads


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="the model repository (the rendered gpu one on GPUs)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4], help="server counts to measure, one per GPU")
    parser.add_argument("--cpu", action="store_true", help="CPU servers (no devices): the code path on a CPU machine")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gpu/scale-out"))
    parser.add_argument("--budget-s", type=float, default=540)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of each load run")
    parser.add_argument("--load-warmup", type=float, default=2.0, help="seconds of each run left out of its figures")
    parser.add_argument("--warmup-s", type=float, default=6.0, help="seconds of the warm-up run over every server (0: none)")
    parser.add_argument("--gateway-workers", nargs="+", default=[AUTO], help=f"one count, one per step, or '{AUTO}'")
    parser.add_argument("--auto-busy", type=float, default=0.8,
                        help=f"'{AUTO}': more workers while the busiest gateway process was busy this share of the run")
    parser.add_argument("--load-workers", nargs="+", default=[],
                        help="load generator processes: one count, or one per step "
                             "(default: 4 per server, at most half the cores)")
    parser.add_argument("--image-runs", nargs="*", default=["8:16"], metavar="BATCH:C1,C2",
                        help="images per request and the requests in flight per server")
    parser.add_argument("--image-model", default="image_pipeline")
    parser.add_argument("--image-slo-ms", type=float, default=0.0, help="p99 objective the image rows are checked against")
    parser.add_argument("--image-source", default="camera",
                        help="'camera' (1080p camera-like pictures, JPEG-encoded by the load generator) "
                             "or loadtest's --source")
    parser.add_argument("--resolution", default="1080p")
    parser.add_argument("--camera-streams", type=int, nargs="*", default=[], help="camera streams per server")
    parser.add_argument("--camera-codec", default="h264")
    parser.add_argument("--camera-source", default="synthetic")
    parser.add_argument("--camera-slo-ms", type=float, default=100.0)
    parser.add_argument("--models", nargs="*", default=[], help="load only these (and what their ensembles need)")
    return parser.parse_args(argv)


def new_results(args, argv: list[str], record: Record, devices: list[str] | None, cores: int) -> Results:
    machine = f"{record.data['gpu']}; {cores} CPUs" if devices else f"CPU servers, no GPU; {cores} CPUs"
    # The notes are the record's own list, so a note lands in both files.
    return Results(args.out, {"date": record.data["date"], "command": " ".join(["python -m bench.gpu.scale_out", *argv]),
                              "cpus": cores, "machine": machine, "devices": devices or [],
                              "camera": f"{args.camera_codec} 1080p30", "steps": [], "rows": [],
                              "notes": record.data["notes"]})


def main(argv=None) -> int:
    args = parse_args(argv)
    loads = parse_loads(args)
    steps = sorted(set(args.gpus))
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    # Per-step values follow --gpus as given, also where this machine runs only the first steps.
    gateway_workers = per_step(args.gateway_workers, steps, "gateway-workers")
    cores = os.cpu_count() or 1
    if args.load_workers:
        load_workers = {n: int(w) for n, w in per_step(args.load_workers, steps, "load-workers").items()}
    else:
        load_workers = {n: max(1, min(4 * n, cores // 2)) for n in steps}
    record = Record(args.out, args.budget_s, "scale")
    devices, steps = devices_for(args, steps, record)
    if not steps:
        raise SystemExit(f"scale_out: none of --gpus {args.gpus} fits this machine's GPUs")
    results = new_results(args, sys.argv[1:] if argv is None else argv, record, devices, cores)
    models = args.models or sorted(p.parent.name for p in args.repo.glob("*/config.pbtxt"))
    explicit = ["--model-control-mode=explicit", *(f"--load-model={m}" for m in args.models)] if args.models else []
    pictures = args.workdir / "pictures"
    if args.image_source == "camera" and any(load.kind == "image" for load in loads):
        write_pictures(pictures, 8)
    began = time.monotonic()
    server_args = ([] if args.cpu else SERVER_ARGS) + explicit
    servers = start_fleet(max(steps), args.repo, args.workdir, extra_args=server_args, timeout=300, devices=devices)
    try:
        record.note(f"{len(servers)} servers ready in {time.monotonic() - began:.0f} s on "
                    f"{', '.join(s.device for s in servers) if devices else 'the CPU'} with {models}")
        first = gateway_workers[steps[0]]
        warm_up(record, args, servers, loads, len(servers) if first == AUTO else int(first), load_workers[max(steps)],
                models, pictures)
        start_workers = 1
        for n in steps:
            start_workers = run_step(record, results, args, n, servers, loads, gateway_workers[n], start_workers,
                                     load_workers[n], models, pictures)
    finally:
        stop_all(servers)
        for server in servers:
            keep_log(server.log_path, args.out / server.log_path.name)
        results.save()
    print("\n".join(tables(results.data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
