"""Pass/fail limits on a run's figures, k6-style, so a CI job can gate on a load test.

Each limit is checked against the summary of a result (a live run or saved ones merged), and every
one that is missed comes back as a `Miss` saying what was measured, the limit and by how much.
`tritonfleet loadtest` exits with `THRESHOLDS_MISSED` (99, k6's code) when any is missed, so a
pipeline can tell a missed objective from a run that could not be made at all (1) or bad flags (2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from loadtest.results import RunResult, summarize

THRESHOLDS_MISSED = 99


@dataclass(frozen=True)
class Thresholds:
    """The limits asked for; None leaves a figure unchecked."""

    max_p99_ms: float | None = None
    max_p50_ms: float | None = None
    max_error_rate: float | None = None  # failed calls / calls that ended (dropped frames are not calls)
    min_throughput: float | None = None  # answered requests per measured second
    min_fps: float | None = None  # video: the slowest stream's answered frames per second
    max_late_frames: float | None = None  # video: frames answered after their 1/FPS deadline, all streams
    max_dropped_frames: float | None = None  # video: frames never sent because the previous was in flight

    VIDEO_ONLY = ("min_fps", "max_late_frames", "max_dropped_frames")

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and (value < 0 or math.isnan(value)):
                raise ValueError(f"{flag(item.name)} must not be negative, got {value}")
        if self.max_error_rate is not None and self.max_error_rate > 1:
            raise ValueError(f"--max-error-rate is a share from 0 to 1, got {self.max_error_rate}")

    @property
    def asked(self) -> list[str]:
        return [item.name for item in fields(self) if getattr(self, item.name) is not None]

    def require_workload(self, kind: str) -> None:
        """Refuse limits that mean nothing for this workload, before any load is sent."""
        video_only = [name for name in self.asked if name in self.VIDEO_ONLY]
        if video_only and kind != "video":
            raise ValueError(f"{', '.join(flag(name) for name in video_only)} apply to video runs, not to {kind} runs")


@dataclass(frozen=True)
class Miss:
    threshold: str  # the field name, e.g. "max_p99_ms"
    measured: float
    limit: float
    what: str  # the figure in words, e.g. "p99 latency" or "stream 3's FPS"
    unit: str = ""

    @property
    def by(self) -> float:
        return abs(self.measured - self.limit)

    def __str__(self) -> str:
        relation = ">" if self.threshold.startswith("max_") else "<"
        unit = f" {self.unit}" if self.unit else ""
        if math.isinf(self.measured):
            return f"{flag(self.threshold)} missed: {self.what} none (no call succeeded), limit {self.limit:.6g}{unit}"
        return (f"{flag(self.threshold)} missed: {self.what} {self.measured:.6g}{unit} {relation} "
                f"{self.limit:.6g}{unit} (by {self.by:.6g}{unit})")


def flag(name: str) -> str:
    """A `Thresholds` field name as its command-line flag: max_p99_ms -> --max-p99-ms."""
    return "--" + name.replace("_", "-")


def check(thresholds: Thresholds, result: RunResult) -> list[Miss]:
    """Every threshold the result misses, in the order of the `Thresholds` fields."""
    thresholds.require_workload(result.kind)
    summary = summarize(result)
    measured = _measured(result, summary)
    misses = []
    for name in thresholds.asked:
        limit = getattr(thresholds, name)
        value, what, unit = measured[name]()
        missed = value > limit if name.startswith("max_") else value < limit
        if missed:
            misses.append(Miss(name, value, limit, what, unit))
    return misses


def _measured(result: RunResult, summary: dict) -> dict:
    """Per threshold, a function giving (figure, its name in words, unit); a run with no answers
    has no latency, which counts as missing any latency limit."""
    latency = summary["latency_ms"]

    def error_rate():
        ended = summary["ok"] + summary["errors"]
        return (summary["errors"] / ended if ended else 1.0), "error rate", ""

    def slowest_stream():
        rows = summary["video"]["per_stream"]
        if not rows:
            return 0.0, "every stream's FPS (no streams measured)", "FPS"
        # Answered frames over the stream's own slots: merged pods and short runs compare alike.
        fps = {row["stream"]: result.config.fps * row["answered"] / row["slots"] if row["slots"] else 0.0
               for row in rows}
        slowest = min(fps, key=fps.get)
        return fps[slowest], f"stream {slowest}'s achieved FPS", "FPS"

    return {
        "max_p99_ms": lambda: (latency.get("p99", math.inf), "p99 latency", "ms"),
        "max_p50_ms": lambda: (latency.get("p50", math.inf), "p50 latency", "ms"),
        "max_error_rate": error_rate,
        "min_throughput": lambda: (summary["throughput"], "answered requests per second", "/s"),
        "min_fps": slowest_stream,
        "max_late_frames": lambda: (summary["video"]["late"], "late frames", ""),
        "max_dropped_frames": lambda: (summary["video"]["dropped"], "dropped frames", ""),
    }
