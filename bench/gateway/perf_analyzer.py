"""Triton's own perf_analyzer straight at one Triton server, through the gateway and through Envoy, side
by side in one run: `--streaming` (ModelStreamInfer) and sequence runs, the throughput perf_analyzer
measures, its p50/p99, and each proxy's CPU per 1,000 inferences (user + system from /proc).

perf_analyzer is the binary of the tritonclient 2.51.0 wheel (the server's release; later wheels no
longer carry it). It needs libb64 and the CUDA 12 runtime library even when no CUDA memory is used:
`fetch` takes all three from pinned packages (PyPI and Debian) into build/perf_analyzer/.

Run from the repository root:
    .venv/bin/python bench/gateway/perf_analyzer.py [--rounds 2] [--baseline TREE] [--json FILE]

Cases: `add_one` (stateless) over one stream at concurrency 1 and 4; `running_sum` (stateful: the
gateway pins each sequence to a pod) as perf_analyzer's sequences, over streams and over unary calls.
Paths: "direct" is one Triton server, as a perf_analyzer user measures a single server; the gateway and
Envoy each in front of that one server (the cost of the hop alone), and the gateway in front of two
servers, as deployed. Envoy has no two-server row: perf_analyzer reads the server's statistics before
and after every window, and through Envoy each read reaches whichever server Envoy picks, so the tool
fails most windows ("failed to find the requested model version"); the gateway answers them for the
whole fleet.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.gateway.stream_loads import cpu_seconds, served  # noqa: E402
from tritonfleet.proxies import GatewayProcess, start_envoy  # noqa: E402
from tritonfleet.triton_server import start_fleet, stop_all  # noqa: E402

REPOSITORY = ROOT / "tests" / "gateway" / "model_repository"
TOOL_DIR = ROOT / "build" / "perf_analyzer"
TRITONCLIENT = "tritonclient==2.51.0"
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12==12.9.79"
LIBB64 = "libb64-0d"
GATEWAY_ENV = {"TRITONFLEET_GATEWAY_HEALTH_INTERVAL_S": "1"}

# name -> (model, perf_analyzer arguments)
CASES = {
    "stream add_one c1": ("add_one", ["--streaming", "--shape", "INPUT0:3", "--concurrency-range", "1"]),
    "stream add_one c4": ("add_one", ["--streaming", "--shape", "INPUT0:3", "--concurrency-range", "4"]),
    "stream sequences c1": ("running_sum", ["--streaming", "--sequence-length", "20", "--concurrency-range", "1"]),
    "stream sequences c4": ("running_sum", ["--streaming", "--sequence-length", "20", "--concurrency-range", "4"]),
    "unary sequences c4": ("running_sum", ["--sequence-length", "20", "--concurrency-range", "4"]),
}


def fetch(tool_dir: Path = TOOL_DIR) -> Path:
    """build/perf_analyzer/{bin/perf_analyzer, lib/} from the pinned packages; kept once there."""
    binary = tool_dir / "bin" / "perf_analyzer"
    if binary.exists():
        return binary
    download = Path(tempfile.mkdtemp(prefix="perf-analyzer-"))
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(download)]
    subprocess.run(pip + ["--platform", "manylinux1_x86_64", TRITONCLIENT], check=True)
    subprocess.run(pip + ["--platform", "manylinux2014_x86_64", CUDA_RUNTIME], check=True)
    subprocess.run(["apt-get", "download", LIBB64], cwd=download, check=True, capture_output=True)
    (tool_dir / "bin").mkdir(parents=True, exist_ok=True)
    (tool_dir / "lib").mkdir(exist_ok=True)
    for wheel in download.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith("/bin/perf_analyzer"):
                    (tool_dir / "bin" / "perf_analyzer").write_bytes(archive.read(name))
                elif name.endswith("/libcudart.so.12"):
                    (tool_dir / "lib" / "libcudart.so.12").write_bytes(archive.read(name))
    deb = next(download.glob(f"{LIBB64}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(download / "deb")], check=True)
    for library in (download / "deb").rglob("libb64.so*"):
        shutil.copy(library, tool_dir / "lib" / library.name, follow_symlinks=True)
    binary.chmod(0o755)
    shutil.rmtree(download)
    return binary


def perf_analyzer(binary: Path, url: str, model: str, arguments: list[str], seconds: float, work: Path) -> dict:
    """One perf_analyzer run; its CSV row (throughput, latency percentiles in µs)."""
    report = work / f"pa-{os.getpid()}-{len(list(work.iterdir()))}.csv"
    argv = [str(binary), "-m", model, "-u", url, "-i", "grpc", "--measurement-interval", str(int(seconds * 1000)),
            "--stability-percentage", "25", "--max-trials", "10", "--percentile", "99", "-f", str(report), *arguments]
    env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent.parent / "lib")}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not report.exists():
        return {"error": (done.stdout + done.stderr).strip().splitlines()[-3:]}
    row = next(csv.DictReader(report.open()))
    return {"throughput": float(row["Inferences/Second"]), "p50_ms": float(row["p50 latency"]) / 1000,
            "p99_ms": float(row["p99 latency"]) / 1000}


def median_row(runs: list[dict]) -> dict:
    measured = [r for r in runs if "throughput" in r]
    if not measured:
        return {"error": runs[0].get("error")}
    row = {key: statistics.median(r[key] for r in measured) for key in measured[0] if key != "error"}
    row["runs"] = len(measured)
    row["failed_runs"] = len(runs) - len(measured)
    return row


def markdown(results: dict) -> str:
    lines = ["| case | path | inferences/s | vs direct | p50 / p99 ms | proxy CPU ms per 1,000 |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    for case, rows in results.items():
        direct = rows["direct"].get("throughput")
        for name, row in rows.items():
            if "throughput" not in row:
                lines.append(f"| {case} | {name} | failed: {row.get('error')} | | | |")
                continue
            ratio = f"{row['throughput'] / direct:.2f}x" if direct and name != "direct" else ""
            cpu = f"{row['cpu_ms_per_1000']:.0f}" if "cpu_ms_per_1000" in row else "-"
            lines.append(f"| {case} | {name} | {row['throughput']:,.0f} | {ratio} | "
                         f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f} | {cpu} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer's measurement window")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier tree whose gateway (in front "
                        "of the one server) runs beside today's")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    binary = fetch()
    work = Path(tempfile.mkdtemp(prefix="perf-analyzer-bench-"))
    (work / "reports").mkdir()
    servers = start_fleet(2, REPOSITORY, work / "fleet")
    urls = [s.grpc_url for s in servers]
    started = []
    try:
        gateway_one = GatewayProcess(urls[:1], work / "gateway-one.log", env=GATEWAY_ENV)
        started.append(gateway_one)
        (work / "envoy").mkdir()
        envoy_one = start_envoy(urls[:1], work / "envoy")
        started.append(envoy_one)
        gateway = GatewayProcess(urls, work / "gateway.log", env=GATEWAY_ENV)
        started.append(gateway)
        # name -> (url, proxy pid, the servers behind it)
        paths = {"direct": (urls[0], None, urls[:1]),
                 "gateway, 1 server": (gateway_one.url, gateway_one.process.pid, urls[:1])}
        if args.baseline:
            before = GatewayProcess(urls[:1], work / "gateway-before.log", env=GATEWAY_ENV,
                                    tree=args.baseline.resolve())
            started.append(before)
            paths["gateway before, 1 server"] = (before.url, before.process.pid, urls[:1])
        paths["Envoy 1.40, 1 server"] = (envoy_one.url, envoy_one.process.pid, urls[:1])
        paths["gateway, 2 servers"] = (gateway.url, gateway.process.pid, urls)
        results = {}
        for case in args.cases:
            model, arguments = CASES[case]
            runs = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, (url, pid, behind) in paths.items():
                    before = [served(u, model) for u in behind]
                    cpu = cpu_seconds(pid) if pid else 0.0
                    row = perf_analyzer(binary, url, model, arguments, args.seconds, work / "reports")
                    if pid and "throughput" in row:
                        # Every inference of the whole run (warm-up and trials too), as the servers count
                        # them, against the proxy's CPU over the same run.
                        used = cpu_seconds(pid) - cpu
                        inferences = sum(served(u, model) - b for u, b in zip(behind, before))
                        row["cpu_ms_per_1000"] = 1e6 * used / max(1, inferences)
                    runs[name].append(row)
            results[case] = {name: median_row(r) for name, r in runs.items()}
            print(case, {n: r.get("throughput") for n, r in results[case].items()}, file=sys.stderr, flush=True)
        print(markdown(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        for proxy in started:
            proxy.stop()
        stop_all(servers)


if __name__ == "__main__":
    main()
