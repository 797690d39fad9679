"""Runs the worker processes of one load run, shows progress, and merges what they recorded.

Workers are spawned (not forked: gRPC's core does not survive a fork), connect, and report ready;
only then does the parent pick one start time a little in the future and hand it to all of them.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import time

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from loadtest.live import LiveMetrics
from loadtest.records import Recorder
from loadtest.worker import WorkerSpec, worker_main

START_DELAY_S = 0.3
READY_TIMEOUT_S = 60.0


class LoadRunError(RuntimeError):
    """A worker failed: its traceback is the message."""


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def run_workers(spec: WorkerSpec, workers: int, live: LiveMetrics, quiet: bool = False) -> Recorder:
    """Run `spec` split over `workers` processes and return their merged recorder."""
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    starts = [context.Queue() for _ in range(workers)]
    processes = [
        context.Process(target=worker_main, args=(starts[i], reports), daemon=True, name=f"loadtest-worker-{i}")
        for i in range(workers)
    ]
    for index, process in enumerate(processes):
        process.start()
        # The spec (with its payloads) goes through the queue, whose feeder thread never blocks us
        # even if a worker dies before reading it.
        starts[index].put(dataclasses.replace(spec, index=index, workers=workers))
    try:
        _wait_ready(reports, processes)
        t0_ns = time.monotonic_ns() + int(START_DELAY_S * 1e9)
        for start in starts:
            start.put(t0_ns)
        return _collect(reports, workers, live, spec, t0_ns, quiet)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()


def _wait_ready(reports, processes: list) -> None:
    ready, workers = 0, len(processes)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while ready < workers:
        try:
            kind, index, payload = reports.get(timeout=0.25)
        except queue.Empty:
            dead = [p.name for p in processes if not p.is_alive()]
            if dead:
                raise LoadRunError(f"worker processes exited before they were ready: {', '.join(dead)}") from None
            if time.monotonic() > deadline:
                raise LoadRunError(f"only {ready} of {workers} workers connected within {READY_TIMEOUT_S:.0f} s") from None
            continue
        if kind == "error":
            raise LoadRunError(f"worker {index}: {payload}")
        ready += kind == "ready"


def _collect(reports, workers: int, live: LiveMetrics, spec: WorkerSpec, t0_ns: int, quiet: bool) -> Recorder:
    duration_s = spec.shape.duration_s
    # A run may outlast its schedule by the slowest request's timeout, and not longer.
    deadline = time.monotonic() + START_DELAY_S + duration_s + spec.timeout_s + 30
    merged = Recorder(t0_ns + int(spec.warmup_s * 1e9))
    done = 0
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                        TimeRemainingColumn(), disable=quiet, transient=True)
    with progress:
        task = progress.add_task(f"{spec.workload} load", total=duration_s, stats="")
        while done < workers:
            try:
                kind, index, payload = reports.get(timeout=0.25)
            except queue.Empty:
                kind = None
            if time.monotonic() > deadline:
                raise LoadRunError(f"{workers - done} workers did not finish in time")
            if kind == "error":
                raise LoadRunError(f"worker {index} failed:\n{payload}")
            if kind == "tick":
                live.add(index, payload)
            elif kind == "done":
                merged.merge(Recorder.from_dict(payload["recorder"]))
                live.generator_cpu_s += payload["cpu_s"]
                done += 1
            elapsed = min(duration_s, max(0.0, (time.monotonic_ns() - t0_ns) / 1e9))
            progress.update(task, completed=elapsed, stats=_progress_text(live))
    return merged


def _progress_text(live: LiveMetrics) -> str:
    text = f"answered {live.answered}  errors {live.errors}"
    if live.workload == "video":
        text += f"  late {live.late}  dropped {live.dropped}  streams {sum(live.streams_by_worker.values())}"
    return text
