"""Search for the highest image rate (or number of camera streams) that still meets a latency SLO.

Like perf_analyzer, a trial's figure only counts when its last measurement windows agree (stable);
an unstable trial is run once more, longer, before it counts as a failure. The search doubles the
level until a trial fails, then bisects between the last pass and the first failure.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from loadtest.results import RunResult, SweepOutcome, summarize
from loadtest.runs import ImageOptions, VideoOptions, run_image, run_video
from loadtest.shape import Shape


@dataclasses.dataclass
class SweepOptions:
    slo_ms: float  # p99 latency must stay at or under this
    start: float
    limit: float  # never try above this level
    trial_s: float = 6.0
    precision: float = 0.05  # stop bisecting when the bracket is this narrow (relative)
    max_trials: int = 12


def _passes(result: RunResult, slo_ms: float, level: float) -> tuple[dict, bool]:
    summary = summarize(result)
    p99 = summary["latency_ms"].get("p99", float("inf"))
    trial = {"level": level, "throughput": summary["throughput"], "p99_ms": p99,
             "stable": summary["stability"]["stable"], "errors": summary["errors"]}
    if result.kind == "video":
        video = summary["video"]
        ok = video["sustained"] == video["streams"] == level
    else:
        # The generator must have kept up, or the figure would describe a lower rate than asked.
        ok = summary["send_rate"] >= 0.98 * level
    trial["passed"] = bool(ok and trial["stable"] and not trial["errors"] and p99 <= slo_ms)
    return trial, trial["passed"]


def _search(run_at: Callable[[float, float], RunResult], sweep: SweepOptions, integer: bool) -> RunResult:
    trials: list[dict] = []
    results: dict[float, RunResult] = {}

    def trial(level: float) -> bool:
        duration = sweep.trial_s
        for attempt in range(2):
            result = run_at(level, duration)
            record, passed = _passes(result, sweep.slo_ms, level)
            if record["stable"] or attempt:
                break
            duration *= 2  # not yet stable: measure once more, for longer
        trials.append(record)
        results[level] = result
        return passed

    best, failed = 0.0, None
    level = sweep.start
    while len(trials) < sweep.max_trials:
        if not trial(level):
            failed = level
            break
        best = level
        if level >= sweep.limit:
            break
        level = min(level * 2, sweep.limit)
    while failed is not None and best and len(trials) < sweep.max_trials:
        middle = (best + failed) / 2
        if integer:
            middle = float(int(middle))
        if middle <= best or (failed - best) <= sweep.precision * best:
            break
        if trial(middle):
            best = middle
        else:
            failed = middle
    chosen = results.get(best) or results[trials[-1]["level"]]
    chosen.trials = trials
    chosen.sweep = SweepOutcome(sweep.slo_ms, best)
    return chosen


def sweep_image(options: ImageOptions, sweep: SweepOptions, bodies: list[bytes]) -> RunResult:
    def run_at(level: float, duration: float) -> RunResult:
        return run_image(dataclasses.replace(options, shape=Shape.constant(level, duration), slo_ms=sweep.slo_ms),
                         bodies)

    return _search(run_at, sweep, integer=False)


def sweep_video(options: VideoOptions, sweep: SweepOptions, bodies: list[bytes]) -> RunResult:
    def run_at(level: float, duration: float) -> RunResult:
        return run_video(dataclasses.replace(options, streams=int(level), duration_s=duration, slo_ms=sweep.slo_ms),
                         bodies)

    return _search(run_at, sweep, integer=True)
