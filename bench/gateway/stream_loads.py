"""Camera-like stream loads through the gateway and Envoy, side by side on two Triton servers: N
ModelStreamInfer streams x 30 messages/s of `add_one`, tiny (12 B) and 150 KiB, for each: the proxy's
CPU per 1,000 messages (user + system from /proc), p50/p99 latency per message (send to answer) and
how many messages each server answered. Rounds are interleaved over the proxies; each figure is the
median over rounds. `--baseline TREE` runs the gateway of an earlier checkout beside today's.

Run from the repository root:
    .venv/bin/python bench/gateway/stream_loads.py [--seconds 8] [--rounds 3] [--streams 8 32] [--baseline TREE]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tritonfleet.proxies import GatewayProcess, start_envoy  # noqa: E402
from tritonfleet.triton_server import start_fleet, stop_all  # noqa: E402

REPOSITORY = ROOT / "tests" / "gateway" / "model_repository"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def served(url, model="add_one"):
    client = grpcclient.InferenceServerClient(url)
    stats = client.get_inference_statistics(model, as_json=True)
    client.close()
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats["model_stats"])


def one_stream(url, elements, count, fps, latencies, errors):
    client = grpcclient.InferenceServerClient(url)
    sent = {}
    done = threading.Event()
    got = [0]

    def callback(result, error):
        now = time.perf_counter()
        if error is not None:
            errors.append(str(error))
        else:
            latencies.append(now - sent[result.get_response().id])
        got[0] += 1
        if got[0] == count:
            done.set()

    client.start_stream(callback=callback)
    tensor = grpcclient.InferInput("INPUT0", [elements], "FP32")
    tensor.set_data_from_numpy(np.ones(elements, dtype=np.float32))
    started = time.perf_counter()
    for index in range(count):
        time.sleep(max(0.0, started + index / fps - time.perf_counter()))
        sent[str(index)] = time.perf_counter()
        client.async_stream_infer("add_one", [tensor], request_id=str(index))
    done.wait(60)
    client.stop_stream()
    client.close()


def load(url, pid, streams, fps, seconds, elements, urls):
    latencies, errors = [], []
    count = int(fps * seconds)
    before = [served(u) for u in urls]
    cpu = cpu_seconds(pid)
    threads = [threading.Thread(target=one_stream, args=(url, elements, count, fps, latencies, errors))
               for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    used = cpu_seconds(pid) - cpu
    messages = streams * count
    # A server counts a request in its statistics a moment after answering it.
    deadline = time.monotonic() + 10
    while True:
        deltas = [served(u) - b for u, b in zip(urls, before)]
        if sum(deltas) >= messages - len(errors) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return {"cpu_ms_per_1000": round(1000 * used / messages * 1000), "p50_ms": round(1000 * np.percentile(latencies, 50), 2),
            "p99_ms": round(1000 * np.percentile(latencies, 99), 2), "errors": len(errors), "split": deltas,
            "first_errors": errors[:2]}


def median_row(runs: list[dict]) -> dict:
    return {"cpu_ms_per_1000": statistics.median(r["cpu_ms_per_1000"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs), "splits": [r["split"] for r in runs]}


def markdown(results: dict, streams_levels, fps: float) -> str:
    lines = ["| load | proxy | CPU ms per 1,000 messages | vs Envoy | p50 / p99 ms | errors | messages per server |",
             "| --- | --- | ---: | ---: | --- | ---: | --- |"]
    for key, rows in results.items():
        envoy = rows["Envoy 1.40"]["cpu_ms_per_1000"]
        for name, row in rows.items():
            splits = ", ".join("/".join(map(str, s)) for s in row["splits"])
            lines.append(f"| {key} | {name} | {row['cpu_ms_per_1000']:.0f} | {row['cpu_ms_per_1000'] / envoy:.2f}x "
                         f"| {row['p50_ms']:.1f} / {row['p99_ms']:.1f} | {row['errors']} | {splits} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier tree whose gateway runs beside today's")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    servers = start_fleet(2, REPOSITORY, work / "fleet")
    urls = [s.grpc_url for s in servers]
    env = {"TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "1"}
    started = []
    try:
        gateway = GatewayProcess(urls, work / "gateway.log", env=env)
        started.append(gateway)
        proxies = {"gateway": (gateway.url, gateway.process.pid)}
        if args.baseline:
            before = GatewayProcess(urls, work / "gateway-before.log", env=env, tree=args.baseline.resolve())
            started.append(before)
            proxies["gateway before"] = (before.url, before.process.pid)
        (work / "envoy").mkdir()
        envoy = start_envoy(urls, work / "envoy")
        started.append(envoy)
        proxies["Envoy 1.40"] = (envoy.url, envoy.process.pid)
        for url, pid in proxies.values():  # warm every instance and connection
            load(url, pid, 8, args.fps, 1, 3, urls)
        results = {}
        for streams in args.streams:
            for elements, label in ((3, "tiny"), (150 * 1024 // 4, "150 KiB")):
                runs = {name: [] for name in proxies}
                for _ in range(args.rounds):
                    for name, (url, pid) in proxies.items():
                        runs[name].append(load(url, pid, streams, args.fps, args.seconds, elements, urls))
                key = f"{streams} streams x {args.fps:g}/s, {label}"
                results[key] = {name: median_row(r) for name, r in runs.items()}
                print(key, {n: (r["cpu_ms_per_1000"], r["p50_ms"], r["p99_ms"]) for n, r in results[key].items()},
                      file=sys.stderr, flush=True)
        print(markdown(results, args.streams, args.fps))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        for proxy in started:
            proxy.stop()
        stop_all(servers)


if __name__ == "__main__":
    main()
