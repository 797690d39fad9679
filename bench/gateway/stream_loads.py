"""Camera-like stream loads through the gateway and Envoy, side by side on two Triton servers: 8
ModelStreamInfer streams x 30 messages/s of `add_one`, tiny (12 B) and 150 KiB, for each: the proxy's
CPU per 1,000 messages (user + system from /proc), p50/p99 latency per message (send to answer) and
how many messages each server answered.

Run from the repository root:  .venv/bin/python bench/gateway/stream_loads.py [SECONDS [ROUNDS]]
"""

import os
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
    time.sleep(0.5)
    deltas = [served(u) - b for u, b in zip(urls, before)]
    messages = streams * count
    return {"cpu_ms_per_1000": round(1000 * used / messages * 1000), "p50_ms": round(1000 * np.percentile(latencies, 50), 2),
            "p99_ms": round(1000 * np.percentile(latencies, 99), 2), "errors": len(errors), "split": deltas,
            "first_errors": errors[:2]}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    work = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    servers = start_fleet(2, REPOSITORY, work / "fleet")
    urls = [s.grpc_url for s in servers]
    try:
        gateway = GatewayProcess(urls, work / "gateway.log", env={"TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "1"})
        (work / "envoy").mkdir()
        envoy = start_envoy(urls, work / "envoy")
        proxies = {"gateway": (gateway.url, gateway.process.pid), "envoy": (envoy.url, envoy.process.pid)}
        for url, pid in proxies.values():  # warm every instance and connection
            load(url, pid, 8, 30, 1, 3, urls)
        for elements, label in ((3, "tiny"), (150 * 1024 // 4, "150 KiB")):
            for _ in range(rounds):
                for name, (url, pid) in proxies.items():
                    print(label, name, load(url, pid, 8, 30, seconds, elements, urls), flush=True)
        gateway.stop()
        envoy.stop()
    finally:
        stop_all(servers)


if __name__ == "__main__":
    main()
