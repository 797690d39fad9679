"""The Grafana dashboards, defined once with grafanalib.

These definitions are the single source of every panel: `render-dashboards` writes them as Grafana
JSON (for the chart's ConfigMaps and deploy/dashboards/), and the live page (`tritonfleet dashboard`)
and the PNG renderer read the panels back from that same JSON. Queries use only the names in
docs/METRICS.md. Ratios sum numerator and denominator by model first and divide after, so pods with
different traffic weigh in by their traffic.
"""

from __future__ import annotations

import json

from grafanalib.core import (
    Dashboard,
    GridPos,
    Stat,
    Target,
    Template,
    Templating,
    TimeSeries,
)
from grafanalib._gen import DashboardEncoder

from observability import selectors as sel

DATASOURCE = "${datasource}"
RATE = "$__rate_interval"
MODEL = sel.MODEL_VARIABLE
BY_MODEL, BY_BACKEND, BY_INSTANCE, BY_CODE = (
    sel.sum_by(label) for label in (sel.MODEL, sel.BACKEND, sel.INSTANCE, sel.CODE))
PANEL_WIDTH, PANEL_HEIGHT, STAT_HEIGHT = 12, 8, 4


def target(expr: str, legend: str = "", ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DATASOURCE)


def series(title: str, unit: str, *targets: Target, description: str = "") -> TimeSeries:
    refs = "ABCDEFGH"
    for ref, tgt in zip(refs, targets):
        tgt.refId = ref
    return TimeSeries(title=title, unit=unit, targets=list(targets), description=description,
                      dataSource=DATASOURCE, legendDisplayMode="list", legendPlacement="bottom")


def stat(title: str, unit: str, expr: str, description: str = "") -> Stat:
    return Stat(title=title, format=unit, targets=[target(expr)], description=description,
                dataSource=DATASOURCE, reduceCalc="lastNotNull", graphMode="area")


def per_request(duration_metric: str) -> str:
    """Average of a Triton duration counter per successful request, in milliseconds, by model."""
    return (f"{BY_MODEL} (rate({duration_metric}{{{MODEL}}}[{RATE}])) / 1000"
            f" / {BY_MODEL} (rate(nv_inference_request_success{{{MODEL}}}[{RATE}]))")


def quantile(q: float, histogram: str, selector: str = "", by: str = sel.MODEL) -> str:
    matchers = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({histogram}_bucket{matchers}[{RATE}])))"


def layout(panels: list) -> list:
    """Stats four to a row on top, then time series two to a row, in definition order."""
    x = y = 0
    row_height = 0
    for panel in panels:
        width, height = (6, STAT_HEIGHT) if isinstance(panel, Stat) else (PANEL_WIDTH, PANEL_HEIGHT)
        if x + width > 24 or (row_height and height != row_height):
            x, y = 0, y + row_height
        panel.gridPos = GridPos(h=height, w=width, x=x, y=y)
        x += width
        row_height = height
    return panels


def templating(with_model: bool) -> Templating:
    variables = [Template(name="datasource", type="datasource", query="prometheus", label="Data source")]
    if with_model:
        variables.append(Template(
            name="model", label="Model", dataSource=DATASOURCE, includeAll=True, multi=True,
            query=f"label_values(nv_inference_request_success, {sel.MODEL})", allValue=".+", default="$__all"))
    return Templating(list=variables)


def dashboard(uid: str, title: str, description: str, panels: list, with_model: bool = False) -> Dashboard:
    return Dashboard(
        uid=uid, title=title, description=description, tags=["tritonfleet"], timezone="utc",
        refresh="10s", panels=layout(panels), templating=templating(with_model),
    ).auto_panel_ids()


def overview() -> Dashboard:
    return dashboard("tritonfleet-overview", "tritonfleet / Fleet overview",
                     "Triton pods, traffic, latency and errors of the whole fleet.", [
        stat("Triton pods up", "none", f"sum({sel.up(sel.TRITON)})"),
        stat("Inferences / s", "reqps", f"sum(rate(nv_inference_request_success[{RATE}]))"),
        stat("Failed requests / s", "reqps", f"sum(rate(nv_inference_request_failure[{RATE}]))"),
        stat("Gateway backends up", "none", "sum(tritonfleet_gateway_backend_up)"),
        series("Inference rate by model", "reqps",
               target(f"{BY_MODEL} (rate(nv_inference_request_success{{{MODEL}}}[{RATE}]))", "{{model}}")),
        series("Average request latency by model", "ms",
               target(per_request("nv_inference_request_duration_us"), "{{model}}")),
        series("Pending requests per Triton pod", "none",
               target(f"{BY_INSTANCE} (nv_inference_pending_request_count)", "{{instance}}"),
               description="Queued requests per pod, summed over its models: what autoscaling targets."),
        series("Gateway requests by status", "reqps",
               target(f"{BY_CODE} (rate(tritonfleet_gateway_requests_total[{RATE}]))", "{{code}}")),
    ], with_model=True)


def models() -> Dashboard:
    return dashboard("tritonfleet-models", "tritonfleet / Models",
                     "Per-model throughput, latency breakdown, queueing and dynamic batching.", [
        series("Throughput by model", "reqps",
               target(f"{BY_MODEL} (rate(nv_inference_count{{{MODEL}}}[{RATE}]))", "{{model}} inferences"),
               target(f"{BY_MODEL} (rate(nv_inference_exec_count{{{MODEL}}}[{RATE}]))", "{{model}} executions")),
        series("Latency breakdown per request", "ms",
               target(per_request("nv_inference_queue_duration_us"), "{{model}} queue"),
               target(per_request("nv_inference_compute_input_duration_us"), "{{model}} input"),
               target(per_request("nv_inference_compute_infer_duration_us"), "{{model}} infer"),
               target(per_request("nv_inference_compute_output_duration_us"), "{{model}} output")),
        series("Queue time per request", "ms",
               target(per_request("nv_inference_queue_duration_us"), "{{model}}")),
        series("Average batch size", "none",
               target(f"{BY_MODEL} (rate(nv_inference_count{{{MODEL}}}[{RATE}]))"
                      f" / {BY_MODEL} (rate(nv_inference_exec_count{{{MODEL}}}[{RATE}]))", "{{model}}"),
               description="Inferences per model execution: how well dynamic batching fills batches."),
        series("Pending requests by model", "none",
               target(f"{BY_MODEL} (nv_inference_pending_request_count{{{MODEL}}})", "{{model}}")),
        series("Failed requests by model", "reqps",
               target(f"{BY_MODEL} (rate(nv_inference_request_failure{{{MODEL}}}[{RATE}]))", "{{model}}")),
    ], with_model=True)


def gateway() -> Dashboard:
    by_backend = f"{BY_BACKEND} (rate(tritonfleet_gateway_requests_total[{RATE}]))"
    return dashboard("tritonfleet-gateway", "tritonfleet / Gateway balance",
                     "How evenly the gateway spreads requests over Triton pods, and what it costs.", [
        series("Requests per backend", "reqps", target(by_backend, "{{backend}}")),
        series("Share of requests per backend", "percentunit",
               target(f"{by_backend} / ignoring (backend) group_left sum({by_backend})", "{{backend}}"),
               description="Even balance: every backend near 1/N."),
        series("In-flight requests per backend", "none",
               target(f"{BY_BACKEND} (tritonfleet_gateway_inflight)", "{{backend}}")),
        series("Backends up", "none",
               target(f"{BY_BACKEND} (tritonfleet_gateway_backend_up)", "{{backend}}")),
        series("Gateway latency p50 / p99", "s",
               target(quantile(0.5, "tritonfleet_gateway_request_duration_seconds"), "{{model}} p50"),
               target(quantile(0.99, "tritonfleet_gateway_request_duration_seconds"), "{{model}} p99")),
        series("Gateway overhead p99", "s",
               target(quantile(0.99, "tritonfleet_gateway_overhead_seconds"), "{{model}}")),
        series("Retries and ejections", "ops",
               target(f"{BY_MODEL} (rate(tritonfleet_gateway_retries_total[{RATE}]))", "retries {{model}}"),
               target(f"{BY_BACKEND} (rate(tritonfleet_gateway_ejections_total[{RATE}]))", "ejections {{backend}}")),
        series("Open streams", "none", target("sum(tritonfleet_gateway_active_streams)", "streams")),
        series("TLS handshakes refused", "ops",
               target(f"{sel.sum_by('reason')} (rate(tritonfleet_gateway_tls_handshake_failures_total[{RATE}]))",
                      "{{reason}}"),
               description="Client connections closed before any call because their TLS handshake failed: a"
                           " plaintext client (not_tls), no or a foreign client certificate under mutual TLS,"
                           " a client that does not trust the gateway's certificate (refused_by_client)."
                           " TCP probes and clients that leave mid-handshake are not counted. Only with TLS on."),
    ])


def video() -> Dashboard:
    video_requests = f"tritonfleet_loadtest_requests_total{{{sel.VIDEO}}}"
    video_answered = f"tritonfleet_loadtest_requests_total{{{sel.VIDEO},{sel.ANSWERED}}}"
    return dashboard("tritonfleet-video", "tritonfleet / Video streams",
                     "Camera streams as the load generator sees them (frame rate, lateness, drops) and inside the camera model.", [
        series("Video frames per second", "fps",
               target(f"{BY_MODEL} (rate({video_answered}[{RATE}]))", "{{model}} answered")),
        series("Late frames per second", "fps",
               target(f"{BY_MODEL} (rate(tritonfleet_loadtest_frames_late_total[{RATE}]))", "{{model}}")),
        series("Dropped frames per second", "fps",
               target(f"{BY_MODEL} (rate(tritonfleet_loadtest_frames_dropped_total[{RATE}]))", "{{model}}")),
        series("Late frame ratio", "percentunit",
               target(f"{BY_MODEL} (rate(tritonfleet_loadtest_frames_late_total[{RATE}]))"
                      f" / {BY_MODEL} (rate({video_requests}[{RATE}]))", "{{model}}")),
        series("Frame latency p99", "s",
               target(quantile(0.99, "tritonfleet_loadtest_latency_seconds", sel.VIDEO), "{{model}}")),
        series("Open camera streams", "none",
               target(f"{BY_MODEL} (tritonfleet_loadtest_streams_active)", "{{model}}")),
        series("Camera model: time per request p99, by phase", "s",
               target(quantile(0.99, "tritonfleet_camera_request_phase_seconds", by="phase"), "{{phase}}"),
               description="Inside camera_stream, from the model taking a request to its answer (total) and each"
                           " stretch of it: behind the camera's earlier requests (lane_wait), decoding, waiting"
                           " for the analysis thread, the analysis round, the answers. A frame is late when it"
                           " is answered more than one period (33 ms at 30 FPS) after its time; Triton's queue"
                           " and the network come on top of these."),
        series("Camera model: decoder sessions", "none",
               target(f"{BY_MODEL} (tritonfleet_camera_decoders)", "{{model}}"),
               description="Open decoder sessions, one per camera stream, over every instance; each instance"
                           " holds at most MAX_DECODERS and refuses a new camera beyond it."),
    ])


DASHBOARDS = {"overview": overview, "models": models, "gateway": gateway, "video": video}


def dashboard_json(build) -> str:
    return json.dumps(build().to_json_data(), cls=DashboardEncoder, sort_keys=True, indent=2)


def all_dashboards() -> dict[str, dict]:
    """Every dashboard as Grafana JSON (a dict), keyed by its short name."""
    return {name: json.loads(dashboard_json(build)) for name, build in DASHBOARDS.items()}
