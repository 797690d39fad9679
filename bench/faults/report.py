"""A fault run's figures from its records, and the markdown table of all of them."""

from __future__ import annotations

from collections import Counter

import numpy as np

from loadtest.records import OK, RequestResult


def p99_ms(results: list[RequestResult]) -> float | None:
    """p99 latency, counted from each request's scheduled send time (open loop)."""
    if not results:
        return None
    return float(np.percentile([r.latency_ns for r in results], 99)) / 1e6


def between(results: list[RequestResult], start_ns: int, end_ns: int) -> list[RequestResult]:
    return [r for r in results if start_ns <= r.scheduled_ns < end_ns]


def failures(results: list[RequestResult]) -> dict[str, int]:
    return dict(Counter(r.status for r in results if r.status != OK))


def seconds(start_ns: int | None, end_ns: int | None) -> float | None:
    if start_ns is None or end_ns is None:
        return None
    return round((end_ns - start_ns) / 1e9, 3)


COLUMNS = ("fault", "load req/s", "duration s", "sent", "failed", "retried", "p99 before ms", "p99 in fault ms",
           "eject s", "take back s", "goal")


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items())) or "0"
    return str(value)


def markdown_table(runs: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for run in runs:
        row = (run["fault"], run["load_rps"], run["duration_s"], run["sent"], run["failed"], run["retried"],
               run["p99_before_ms"], run["p99_fault_ms"], run["eject_s"], run["take_back_s"],
               "met" if run["goal_met"] else "MISSED")
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)
