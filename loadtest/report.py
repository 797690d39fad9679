"""Reporters: render saved results as text (a rich table), JSON (the summary) or one HTML page.

Everything here reads `RunResult`s, never a live run, so old runs and merged runs render the same way.
"""

from __future__ import annotations

import json
import math
from html import escape

from rich.console import Console
from rich.table import Table

from loadtest import svg
from loadtest.results import RunResult, summarize


def _latency_row(summary: dict) -> list[str]:
    latency = summary["latency_ms"]
    return [f"{latency.get(key, 0):.1f}" for key in ("p50", "p90", "p99", "p99.9")] + [f"{summary['max_ms']:.1f}"]


def _describe(result: RunResult) -> str:
    config = result.config
    if result.kind == "video":
        return f"video {config.streams} streams × {config.fps:g} FPS ({config.mode})"
    stages = config.shape.stages
    what = f"{config.peak:g} req/s" if config.loop == "open" else f"concurrency {config.peak:g}"
    if len(stages) > 1:
        what = f"{len(stages)} stages up to {what}"
    return f"image {config.loop} loop, {what}, batch {config.batch_size}"


def render_text(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    summary = summarize(result)
    config = result.config
    console.print(f"[bold]{_describe(result)}[/bold] → {config.model} at {config.url}")
    table = Table("sent", "ok", "errors", "send/s", "answered/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms")
    table.add_row(str(summary["sent"]), str(summary["ok"]), str(summary["errors"]), f"{summary['send_rate']:.1f}",
                  f"{summary['throughput']:.1f}", *_latency_row(summary))
    console.print(table)
    stable = summary["stability"]
    console.print("stable: yes" if stable["stable"] else f"stable: no ({stable['reason']})")
    if result.generator_cpu_s:
        console.print(f"generator CPU: {result.generator_cpu_s:.1f} s over {config.workers} workers")
    if "video" in summary:
        video = summary["video"]
        console.print(f"streams sustained at {config.fps:g} FPS: {video['sustained']} of {video['streams']}; "
                      f"late frames {video['late']}, dropped frames {video['dropped']}")
        streams = Table("stream", "slots", "answered", "late", "dropped", "errors", "p99 ms", "jitter ms", "sustained")
        for row in video["per_stream"]:
            streams.add_row(str(row["stream"]), str(row["slots"]), str(row["answered"]), str(row["late"]),
                            str(row["dropped"]), str(row["errors"]), f"{row['p99_ms']:.1f}", f"{row['jitter_ms']:.2f}",
                            "yes" if row["sustained"] else "no")
        console.print(streams)
        if "by_frame" in video:
            kinds = Table("frames", "slots", "answered", "late", "dropped", "errors", "late or dropped", "p99 ms")
            for kind, row in video["by_frame"].items():
                kinds.add_row(kind.replace("_", " "), str(row["slots"]), str(row["answered"]), str(row["late"]),
                              str(row["dropped"]), str(row["errors"]), _missed_share(row), f"{row['p99_ms']:.1f}")
            console.print(kinds)
    for server, fraction in summary.get("server_share", {}).items():
        console.print(f"  {server}: {fraction:.1%} of requests")
    if result.trials:
        render_trials(result.trials, console)


def render_trials(trials: list[dict], console: Console) -> None:
    table = Table("level", "answered/s", "p99 ms", "stable", "meets SLO")
    for trial in trials:
        table.add_row(f"{trial['level']:g}", f"{trial['throughput']:.1f}", f"{trial['p99_ms']:.1f}",
                      "yes" if trial["stable"] else "no", "yes" if trial["passed"] else "no")
    console.print(table)


def render_json(result: RunResult) -> str:
    data = result.to_dict()
    del data["recorder"]
    return json.dumps(data, indent=1)


def render_compare(results: list[tuple[str, RunResult]], console: Console | None = None) -> None:
    console = console or Console()
    table = Table("run", "workload", "send/s", "answered/s", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                  "max ms", "late", "dropped", "sustained")
    for name, result in results:
        summary = summarize(result)
        video = summary.get("video", {})
        sustained = f"{video['sustained']}/{video['streams']}" if video else ""
        table.add_row(name, _describe(result), f"{summary['send_rate']:.1f}", f"{summary['throughput']:.1f}",
                      str(summary["errors"]), *_latency_row(summary), str(video.get("late", "")),
                      str(video.get("dropped", "")), sustained)
    console.print(table)


def _percentile_curve(result: RunResult) -> str:
    histogram = result.recorder.latency
    # x = -log10(1 - p): 50% at 0.3, 90% at 1, 99% at 2, 99.9% at 3, 99.99% at 4.
    points = []
    for step in range(0, 401, 5):
        percentile = 100 * (1 - 10 ** (-step / 100))
        points.append((step / 100, histogram.get_value_at_percentile(percentile) / 1000))
    ticks = [(0, "0%"), (math.log10(2), "50%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%")]
    return svg.line_chart("Latency by percentile", {"latency ms": points}, "percentile", "ms", ticks,
                          chart_id="percentiles")


def html_charts(result: RunResult) -> list[str]:
    timeline = sorted(result.recorder.timeline.items())
    charts = []
    if result.recorder.latency.get_total_count():
        charts.append(svg.line_chart("Latency over time (from scheduled send)", {
            "p50": [(s, sec.latency.get_value_at_percentile(50) / 1000) for s, sec in timeline if sec.ok],
            "p99": [(s, sec.latency.get_value_at_percentile(99) / 1000) for s, sec in timeline if sec.ok],
            "max": [(s, sec.latency.get_max_value() / 1000) for s, sec in timeline if sec.ok],
        }, "seconds", "ms", chart_id="latency-over-time"))
        charts.append(_percentile_curve(result))
    charts.append(svg.line_chart("Throughput", {
        "sent/s": [(s, sec.sent) for s, sec in timeline],
        "ok/s": [(s, sec.ok) for s, sec in timeline],
        "errors/s": [(s, sec.errors) for s, sec in timeline],
    }, "seconds", "per second", chart_id="throughput"))
    if result.kind == "video":
        charts.append(svg.line_chart("Late and dropped frames", {
            "late/s": [(s, sec.late) for s, sec in timeline],
            "dropped/s": [(s, sec.dropped) for s, sec in timeline],
        }, "seconds", "frames per second", chart_id="frames"))
    share = summarize(result).get("server_share")
    if share:
        charts.append(svg.bar_chart("Each server's share of requests", {k: 100 * v for k, v in share.items()}, "%",
                                    chart_id="server-share"))
    if result.trials:
        charts.append(svg.line_chart("Sweep: p99 latency by level", {
            "p99 ms": [(t["level"], t["p99_ms"]) for t in result.trials]}, "level", "ms", chart_id="sweep"))
    return charts


_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#111}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}svg.chart{display:block;margin:12px 0}
svg text{font-size:11px;fill:#333}svg .title{font-size:13px;font-weight:600}.axis{stroke:#333}
.grid{stroke:#e5e7eb}.charts{display:flex;flex-wrap:wrap;gap:8px}"""
# Counts the drawn series once the page has loaded: headless checks read it from the dumped DOM.
_SCRIPT = """document.addEventListener('DOMContentLoaded',function(){var n=document.querySelectorAll(
'svg.chart .series').length;document.body.setAttribute('data-series',String(n));});"""


def _missed_share(row: dict) -> str:
    """Late and dropped slots as a share of all: what the frame rule counts against a camera."""
    return f"{(row['late'] + row['dropped']) / row['slots']:.1%}" if row["slots"] else "-"


def _summary_table(result: RunResult) -> str:
    summary = summarize(result)
    rows = [("workload", _describe(result)), ("model", result.config.model), ("target", result.config.url),
            ("started", result.started_at), ("sent", summary["sent"]), ("ok", summary["ok"]),
            ("errors", summary["errors"]), ("send rate /s", f"{summary['send_rate']:.1f}"),
            ("answered /s", f"{summary['throughput']:.1f}")]
    rows += [(f"{key} ms", f"{value:.2f}") for key, value in summary["latency_ms"].items()]
    rows.append(("stable", "yes" if summary["stability"]["stable"] else f"no: {summary['stability']['reason']}"))
    if "video" in summary:
        video = summary["video"]
        rows += [("streams sustained", f"{video['sustained']} of {video['streams']}"),
                 ("late frames", video["late"]), ("dropped frames", video["dropped"])]
        for kind, row in video.get("by_frame", {}).items():
            rows.append((f"{kind.replace('_', ' ')}: late or dropped, p99",
                         f"{_missed_share(row)} of {row['slots']}, {row['p99_ms']:.1f} ms"))
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(result: RunResult) -> str:
    charts = "".join(f"<div>{chart}</div>" for chart in html_charts(result))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tritonfleet load test: "
            f"{escape(_describe(result))}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            f"<h1>Load test: {escape(_describe(result))}</h1>{_summary_table(result)}"
            f"<div class='charts'>{charts}</div></body></html>")
