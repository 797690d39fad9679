"""`tritonfleet demo`: start the local stack, run a short scripted load through it, report, stop.

The load is a handful of scenarios, each a bounded number of real inference requests sent from a
few threads. The summary says how many requests ran, the throughput, latency percentiles and how
the requests were spread over the Triton servers, read from each server's own metrics.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import tritonclient.grpc as grpcclient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from tritonclient.utils import InferenceServerException

from tritonfleet import triton_metrics
from tritonfleet.stack import Stack
from tritonfleet.stack_config import StackConfig


@dataclass
class Scenario:
    title: str
    model: str
    make_inputs: Callable[[np.random.Generator], list[grpcclient.InferInput]]
    output: str
    requests: int = 120
    concurrency: int = 4


@dataclass
class ScenarioResult:
    scenario: Scenario
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    per_server: dict[str, float] = field(default_factory=dict)
    sample_output: np.ndarray | None = None

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0


def raw_frames_input(height: int, width: int, batch: int = 1) -> Callable:
    def make(rng: np.random.Generator) -> list[grpcclient.InferInput]:
        frames = rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)
        tensor = grpcclient.InferInput("FRAMES", list(frames.shape), "UINT8")
        tensor.set_data_from_numpy(frames)
        return [tensor]

    return make


def default_scenarios() -> list[Scenario]:
    return [
        Scenario("480p frames", "image_preprocess", raw_frames_input(480, 640), "PIXELS"),
        Scenario("1080p frames", "image_preprocess", raw_frames_input(1080, 1920), "PIXELS", requests=40),
    ]


class Targets:
    """Where requests go: one gRPC address (a gateway), or the servers themselves in turn."""

    def __init__(self, addresses: list[str], label: str):
        self.addresses = addresses
        self.label = label
        self._clients = threading.local()

    def client(self, index: int) -> grpcclient.InferenceServerClient:
        clients = getattr(self._clients, "by_address", None)
        if clients is None:
            clients = self._clients.by_address = {}
        address = self.addresses[index % len(self.addresses)]
        if address not in clients:
            clients[address] = grpcclient.InferenceServerClient(address)
        return clients[address]


def run_scenario(scenario: Scenario, targets: Targets, metrics_urls: list[str], progress: Progress) -> ScenarioResult:
    result = ScenarioResult(scenario)
    before = [triton_metrics.successes(url, scenario.model) for url in metrics_urls]
    task = progress.add_task(scenario.title, total=scenario.requests)
    lock = threading.Lock()

    def one(index: int) -> None:
        rng = np.random.default_rng(index)
        inputs = scenario.make_inputs(rng)
        start = time.perf_counter()
        try:
            reply = targets.client(index).infer(scenario.model, inputs, client_timeout=60)
        except InferenceServerException as exc:
            with lock:
                result.errors.append(str(exc))
        else:
            with lock:
                result.latencies_s.append(time.perf_counter() - start)
                if result.sample_output is None:
                    result.sample_output = reply.as_numpy(scenario.output)
        progress.advance(task)

    started = time.perf_counter()
    with ThreadPoolExecutor(scenario.concurrency) as pool:
        list(pool.map(one, range(scenario.requests)))
    result.wall_s = time.perf_counter() - started
    after = [triton_metrics.successes(url, scenario.model) for url in metrics_urls]
    result.per_server = {url: a - b for url, a, b in zip(metrics_urls, after, before)}
    return result


def summary_table(results: list[ScenarioResult], targets: Targets) -> Table:
    table = Table(title=f"tritonfleet demo — requests sent to {targets.label}")
    for column in ("scenario", "model", "ok", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "per server"):
        table.add_column(column, justify="left" if column in ("scenario", "model", "per server") else "right", no_wrap=True)
    for r in results:
        total = sum(r.per_server.values()) or 1.0
        spread = " / ".join(f"{100 * n / total:.0f}%" for n in r.per_server.values())
        table.add_row(
            r.scenario.title, r.scenario.model, str(len(r.latencies_s)), str(len(r.errors)), f"{r.throughput:.1f}",
            f"{r.percentile_ms(50):.1f}", f"{r.percentile_ms(90):.1f}", f"{r.percentile_ms(99):.1f}", spread,
        )
    return table


def run_demo(config: StackConfig, workdir: Path, console: Console | None = None) -> int:
    console = console or Console(width=max(Console().width, 110))
    console.print(f"[bold]Starting the local stack[/] ({', '.join(s.name for s in config.services)}) ...")
    with Stack(config, workdir) as stack:
        servers = stack.triton_servers()
        for name, reason in stack.skipped.items():
            console.print(f"[yellow]skipped {name}[/]: {reason}")
        console.print(f"{len(servers)} Triton servers ready: " + ", ".join(s.grpc_url for s in servers))
        targets = Targets([s.grpc_url for s in servers], f"{len(servers)} Triton servers in turn")
        metrics_urls = [s.metrics_url for s in servers]
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        with progress:
            results = [run_scenario(s, targets, metrics_urls, progress) for s in default_scenarios()]
        console.print(summary_table(results, targets))
        for r in results:
            if r.sample_output is not None:
                out = r.sample_output
                console.print(
                    f"{r.scenario.model}: output {r.scenario.output} shape {tuple(out.shape)} "
                    f"dtype {out.dtype}, mean {out.mean():.4f}, std {out.std():.4f}"
                )
            for error in sorted(set(r.errors))[:3]:
                console.print(f"[red]{r.scenario.model} error:[/] {error}")
    console.print("[bold]Stack stopped.[/]")
    failed = any(r.errors or not r.latencies_s for r in results)
    return 1 if failed else 0
