"""Gateway benchmark: direct, gateway, Envoy and HAProxy `mode tcp` side by side, in one run.

Run from the repository root:  .venv/bin/python bench/gateway/run.py [--rounds 3] [--json out.json]
(`--parts slow` runs parts 2 and 3 only, `--parts two` part 1 only).

With `--baseline TREE` (a checkout of an earlier commit, e.g. `git worktree add /tmp/before <rev>`), the
gateway of that tree runs beside today's in the same run, so a change is measured against what it
replaced.
1. Two Triton servers, ONE client channel, concurrency 1 (also through bench/gateway/naive_proxy.py,
   the baseline), `add_one` with a tiny (12 B) and a 150 KB
   request: split over the servers, p50 latency added over going direct, and the proxy's CPU time per
   1000 requests (from /proc: user + system of the proxy process); then p50 and the proxy's CPU per
   1000 requests again under load, 16 and 64 in flight on the one channel. Rounds are interleaved over the
   paths and each figure is the median over rounds.
2. Three servers, one of them 3x slower (`slow` with delay_ms 2, 2, 6 from per-server repository
   copies), closed loop of 8 concurrent requests on one channel: p50/p99 through the gateway and Envoy,
   and the share of requests the slow server answered; for reference, the same load through a
   gateway over the two fast servers only (the tail that is the machine's, not the picker's).
3. One ModelStreamInfer stream at 30 FPS (150 KB frames) for 5 s: split over the three servers.
Prints a Markdown table (and writes JSON with --json). Timings depend on the machine: compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.gateway.proxies import start_naive_proxy  # noqa: E402
from tritonfleet.proxies import GatewayProcess, start_envoy, start_haproxy  # noqa: E402
from tritonfleet.triton_server import start_fleet, stop_all  # noqa: E402

REPOSITORY = ROOT / "tests" / "gateway" / "model_repository"
TICKS = os.sysconf("SC_CLK_TCK")
BIG_ELEMENTS = 150 * 1024 // 4
# The gateway as deployed: health checks every second (the tests check faster).
GATEWAY_ENV = {"TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "1"}
# The gateway of an earlier tree (--baseline), side by side with today's.
BASELINE_NAME = "gateway before"
# Part one also measures proxy CPU under load: these many requests in flight on the one channel.
LOADED_CONCURRENCY = (16, 64)
NAIVE_NAME = "naive grpc.aio proxy (baseline)"
# Part two's reference: the gateway over the two fast servers only, the tail no picker can beat there.
FAST_ONLY_NAME = "gateway over the 2 fast servers only (reference)"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def inputs(elements: int, name: str = "INPUT0"):
    tensor = grpcclient.InferInput(name, [elements], "FP32")
    tensor.set_data_from_numpy(np.ones(elements, dtype=np.float32))
    return [tensor]


def served(url: str, model: str) -> int:
    client = grpcclient.InferenceServerClient(url)
    stats = client.get_inference_statistics(model, as_json=True)
    client.close()
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats["model_stats"])


def sequential_latencies(url: str, request, count: int) -> list[float]:
    client = grpcclient.InferenceServerClient(url)  # one channel
    for _ in range(20):
        client.infer("add_one", request)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        client.infer("add_one", request)
        latencies.append(time.perf_counter() - started)
    client.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def baseline_gateway(urls: list[str], log: Path, baseline: Path | None) -> GatewayProcess | None:
    """The gateway of an earlier tree: its packages first on the child's path."""
    if baseline is None:
        return None
    return GatewayProcess(urls, log, env=GATEWAY_ENV, tree=baseline.resolve())


def part_one(workdir: Path, rounds: int, tiny_count: int, big_count: int, loaded_count: int,
             baseline: Path | None = None) -> list[dict]:
    servers = start_fleet(2, REPOSITORY, workdir / "two")
    urls = [s.grpc_url for s in servers]
    try:
        gateway = GatewayProcess(urls, workdir / "gateway.log", env=GATEWAY_ENV)
        earlier = baseline_gateway(urls, workdir / "gateway-before.log", baseline)
        (workdir / "envoy-two").mkdir()
        envoy = start_envoy(urls, workdir / "envoy-two")
        haproxy = start_haproxy(urls, workdir)
        naive = start_naive_proxy(urls, workdir)
        paths = {"direct": (urls[0], None), "gateway": (gateway.url, gateway.process.pid),
                 **({BASELINE_NAME: (earlier.url, earlier.process.pid)} if earlier else {}),
                 "Envoy 1.40 LEAST_REQUEST": (envoy.url, envoy.process.pid),
                 "HAProxy mode tcp (L4)": (haproxy.url, haproxy.process.pid),
                 NAIVE_NAME: (naive.url, naive.process.pid)}
        figures = {name: {"p50_tiny": [], "p50_big": [], "cpu_tiny": [], "cpu_big": [], "split": [],
                          **{f"{kind}_c{c}_{size}": [] for kind in ("cpu", "p50") for c in LOADED_CONCURRENCY
                             for size in ("tiny", "big")}}
                   for name in paths}
        for _ in range(rounds):
            for name, (url, pid) in paths.items():
                before = [served(u, "add_one") for u in urls]
                cpu = cpu_seconds(pid) if pid else 0.0
                tiny = sequential_latencies(url, inputs(3), tiny_count)
                cpu_tiny = cpu_seconds(pid) - cpu if pid else 0.0
                after_tiny = [served(u, "add_one") for u in urls]
                cpu = cpu_seconds(pid) if pid else 0.0
                big = sequential_latencies(url, inputs(BIG_ELEMENTS), big_count)
                cpu_big = cpu_seconds(pid) - cpu if pid else 0.0
                for concurrency in LOADED_CONCURRENCY:
                    for size, elements in (("tiny", 3), ("big", BIG_ELEMENTS)):
                        cpu = cpu_seconds(pid) if pid else 0.0
                        loaded = asyncio.run(closed_loop(url, concurrency, loaded_count, "add_one", elements))
                        figures[name][f"p50_c{concurrency}_{size}"].append(percentile(loaded, 50))
                        if pid:
                            figures[name][f"cpu_c{concurrency}_{size}"].append(
                                1000 * (cpu_seconds(pid) - cpu) / loaded_count)
                deltas = [a - b for a, b in zip(after_tiny, before)]
                figures[name]["split"].append([round(100 * d / sum(deltas)) for d in deltas])
                figures[name]["p50_tiny"].append(percentile(tiny, 50))
                figures[name]["p50_big"].append(percentile(big, 50))
                # Warm-up requests are part of what the proxy handled: count them.
                figures[name]["cpu_tiny"].append(1000 * cpu_tiny / (tiny_count + 20))
                figures[name]["cpu_big"].append(1000 * cpu_big / (big_count + 20))
        for proxy in (gateway, earlier, envoy, haproxy, naive):
            if proxy is not None:
                proxy.stop()
    finally:
        stop_all(servers)
    direct_tiny = statistics.median(figures["direct"]["p50_tiny"])
    direct_big = statistics.median(figures["direct"]["p50_big"])
    rows = []
    for name, f in figures.items():
        rows.append({
            "path": name,
            "split": " – ".join(sorted({"/".join(map(str, s)) for s in f["split"]})),
            "p50_tiny_ms": 1000 * statistics.median(f["p50_tiny"]),
            "p50_big_ms": 1000 * statistics.median(f["p50_big"]),
            "added_tiny_ms": 1000 * (statistics.median(f["p50_tiny"]) - direct_tiny),
            "added_big_ms": 1000 * (statistics.median(f["p50_big"]) - direct_big),
            "cpu_tiny_ms": statistics.median(f["cpu_tiny"]) * 1000,
            "cpu_big_ms": statistics.median(f["cpu_big"]) * 1000,
            **{f"{key}_ms": statistics.median(f[key]) * 1000 if f[key] else None
               for key in f if key.startswith(("cpu_c", "p50_c"))},
        })
    return rows


def slow_fleet(workdir: Path, delays: list[int]):
    """Three servers, each on its own copy of the repository with its own `slow` delay."""
    servers = []
    for index, delay in enumerate(delays):
        repo = workdir / f"repo-{index}"
        shutil.copytree(REPOSITORY, repo)
        config = repo / "slow" / "config.pbtxt"
        config.write_text(config.read_text().replace('string_value: "0"', f'string_value: "{delay}"'))
        servers += start_fleet(1, repo, workdir / f"slow-{index}")
    return servers


async def closed_loop(url: str, concurrency: int, total: int, model: str = "slow", elements: int = 3) -> list[float]:
    """`total` requests, `concurrency` at a time, on one channel; their latencies."""
    latencies: list[float] = []
    async with aioclient.InferenceServerClient(url) as client:  # one channel
        tensor = aioclient.InferInput("INPUT0", [elements], "FP32")
        tensor.set_data_from_numpy(np.ones(elements, dtype=np.float32))
        started_count = 0

        async def worker():
            nonlocal started_count
            while started_count < total:
                started_count += 1
                started = time.perf_counter()
                await client.infer(model, [tensor])
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def video_stream(url: str, frames: int, fps: float) -> None:
    client = grpcclient.InferenceServerClient(url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error))
    frame = inputs(BIG_ELEMENTS)
    started = time.perf_counter()
    for index in range(frames):
        time.sleep(max(0.0, started + index / fps - time.perf_counter()))
        client.async_stream_infer("add_one", frame, request_id=str(index))
    client.stop_stream()
    client.close()
    errors = [e for e in iter(answers.get_nowait, None) if e] if not answers.empty() else []
    if errors:
        raise RuntimeError(f"stream errors: {errors[:3]}")


def parts_two_and_three(workdir: Path, rounds: int, total: int, frames: int, baseline: Path | None = None) -> dict:
    servers = slow_fleet(workdir, [2, 2, 6])
    urls = [s.grpc_url for s in servers]
    result: dict = {}
    try:
        # Warm every model instance on every server first (a Python-backend instance's first call is
        # slow); otherwise whichever path runs first pays for it in its p99.
        for url in urls:
            asyncio.run(closed_loop(url, 8, 80))
        gateway = GatewayProcess(urls, workdir / "gateway3.log", env=GATEWAY_ENV)
        earlier = baseline_gateway(urls, workdir / "gateway3-before.log", baseline)
        fast_only = GatewayProcess(urls[:2], workdir / "gateway2-fast.log", env=GATEWAY_ENV)
        (workdir / "envoy3").mkdir()
        envoy = start_envoy(urls, workdir / "envoy3")
        paths = {"gateway": gateway.url, **({BASELINE_NAME: earlier.url} if earlier else {}),
                 "Envoy 1.40 LEAST_REQUEST": envoy.url,
                 FAST_ONLY_NAME: fast_only.url}
        p99 = {name: [] for name in paths}
        p50 = {name: [] for name in paths}
        slow_share = {name: [] for name in paths}
        for _ in range(rounds):
            for name, url in paths.items():
                before = [served(u, "slow") for u in urls]
                latencies = asyncio.run(closed_loop(url, 8, total))
                deltas = [served(u, "slow") - b for u, b in zip(urls, before)]
                slow_share[name].append(deltas[-1] / sum(deltas))
                p99[name].append(percentile(latencies, 99))
                p50[name].append(percentile(latencies, 50))
        result["slow_pod"] = {name: {"p50_ms": 1000 * statistics.median(p50[name]),
                                     "p99_ms": 1000 * statistics.median(p99[name]),
                                     "p99_ms_rounds": [1000 * v for v in p99[name]],
                                     "slow_share_rounds": slow_share[name]} for name in paths}
        result["video"] = {}
        for name, url in paths.items():
            if name == FAST_ONLY_NAME:
                continue
            before = [served(u, "add_one") for u in urls]
            video_stream(url, frames, 30.0)
            deltas = [served(u, "add_one") - b for u, b in zip(urls, before)]
            result["video"][name] = [round(100 * d / sum(deltas)) for d in deltas]
        for proxy in (gateway, earlier, envoy, fast_only):
            if proxy is not None:
                proxy.stop()
    finally:
        stop_all(servers)
    return result


def markdown_part_one(rows: list[dict]) -> list[str]:
    lines = [
        "Two servers, one client channel (`add_one`; tiny = 12 B, big = 150 KB request); latency at "
        "concurrency 1, proxy CPU per 1000 requests at concurrency 1 and with "
        + " and ".join(map(str, LOADED_CONCURRENCY)) + " in flight:",
        "",
        "| path | split over the 2 servers (%) | p50 tiny / big (ms) | p50 added tiny / big (ms) "
        "| proxy CPU tiny / big (ms), 1 in flight | "
        + " | ".join(f"p50 / CPU tiny, big, {c} in flight" for c in LOADED_CONCURRENCY) + " |",
        "| --- | --- | --- | --- | --- |" + " --- |" * len(LOADED_CONCURRENCY),
    ]
    for r in rows:
        direct = r["path"] == "direct"
        cpu = "-" if direct else f"{r['cpu_tiny_ms']:.0f} / {r['cpu_big_ms']:.0f}"
        loaded = " | ".join(
            f"{r[f'p50_c{c}_tiny_ms']:.2f} / " + ("-" if direct else f"{r[f'cpu_c{c}_tiny_ms']:.0f}")
            + f", {r[f'p50_c{c}_big_ms']:.2f} / " + ("-" if direct else f"{r[f'cpu_c{c}_big_ms']:.0f}")
            for c in LOADED_CONCURRENCY)
        added = "-" if direct else f"{r['added_tiny_ms']:+.2f} / {r['added_big_ms']:+.2f}"
        lines.append(f"| {r['path']} | {r['split']} | {r['p50_tiny_ms']:.2f} / {r['p50_big_ms']:.2f} | {added} "
                     f"| {cpu} | {loaded} |")
    gw = next(r for r in rows if r["path"] == "gateway")
    envoy = next(r for r in rows if r["path"].startswith("Envoy"))
    naive = next(r for r in rows if r["path"] == NAIVE_NAME)

    def ratio(key: str, other: dict) -> str:
        return f"{gw[key + '_tiny_ms'] / other[key + '_tiny_ms']:.2f}x / {gw[key + '_big_ms'] / other[key + '_big_ms']:.2f}x"

    lines += [
        "",
        f"Ratios gateway / Envoy (tiny / big): p50 added {ratio('added', envoy)}; CPU {ratio('cpu', envoy)}"
        + "".join(f", {c} in flight {ratio(f'cpu_c{c}', envoy)}" for c in LOADED_CONCURRENCY)
        + f". Gateway / naive proxy CPU: {ratio('cpu', naive)}"
        + "".join(f", {c} in flight {ratio(f'cpu_c{c}', naive)}" for c in LOADED_CONCURRENCY) + ".",
    ]
    return lines


def markdown_parts_two_and_three(rest: dict) -> list[str]:
    lines = [
        "Three servers, one 3x slower (`slow`: 2, 2, 6 ms), 8 concurrent requests on one channel; and one "
        "ModelStreamInfer stream at 30 FPS of 150 KB frames over the three (homogeneous `add_one`):",
        "",
        "| path | p50 (ms) | p99 (ms) | p99 vs Envoy | p99 per round (ms) | slow server's share (%) "
        "| 30-FPS stream split (%) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    envoy_p99 = rest["slow_pod"]["Envoy 1.40 LEAST_REQUEST"]["p99_ms"]
    for name, f in rest["slow_pod"].items():
        split = "/".join(map(str, rest["video"][name])) if name in rest["video"] else "-"
        rounds = ", ".join(f"{v:.1f}" for v in f["p99_ms_rounds"])
        shares = ", ".join(f"{100 * v:.1f}" for v in f["slow_share_rounds"])
        lines.append(f"| {name} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | {f['p99_ms'] / envoy_p99:.2f}x "
                     f"| {rounds} | {shares} | {split} |")
    return lines


def machine_state() -> dict:
    """How busy and how fast the machine is right now: a shared host's neighbours move every figure."""
    started = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return {"load_average": os.getloadavg()[0], "loop_s": time.perf_counter() - started}


def markdown(rows: list[dict] | None, rest: dict | None, command: str, machine: dict) -> str:
    lines = [
        f"- Command: `{command}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), loopback, Triton 2.51 on CPU.",
        f"- Machine at the start: load average {machine['load_average']:.1f}; a 5-million-step Python loop "
        f"took {machine['loop_s']:.2f} s (0.3-0.4 s on a quiet host; slower means busy neighbours).",
    ]
    for part in ([markdown_part_one(rows)] if rows else []) + ([markdown_parts_two_and_three(rest)] if rest else []):
        lines += [""] + part
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", type=int, default=500, help="requests per round, tiny")
    parser.add_argument("--big", type=int, default=200, help="requests per round, 150 KB")
    parser.add_argument("--slow-requests", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--loaded", type=int, default=2000,
                        help="requests per round, size and concurrency for the CPU under load")
    parser.add_argument("--parts", choices=["all", "two", "slow"], default="all",
                        help="two: part 1 only (two servers); slow: parts 2 and 3 only (three servers)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier tree whose gateway runs beside today's")
    args = parser.parse_args(argv)
    command = "python bench/gateway/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = rest = None
    machine = machine_state()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        if args.parts in ("all", "two"):
            rows = part_one(workdir, args.rounds, args.tiny, args.big, args.loaded, args.baseline)
        if args.parts in ("all", "slow"):
            rest = parts_two_and_three(workdir, args.rounds, args.slow_requests, args.frames, args.baseline)
    print(markdown(rows, rest, command.strip(), machine))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "two_servers": rows, **(rest or {})}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
