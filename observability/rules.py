"""The Prometheus alert rules, defined once here and rendered to YAML by `render-dashboards`.

Every alert carries a severity, a summary, a description and a runbook link; the runbook entries are
generated from the same definitions. Job and label names come from observability/selectors.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from observability import selectors as sel

RUNBOOK_BASE = "https://github.com/tritonfleet/tritonfleet/blob/main/deploy/prometheus/RUNBOOK.md"
WINDOW = "5m"
GATEWAY_FAILED = f"tritonfleet_gateway_requests_total{{{sel.NOT_OK}}}"
VIDEO_FRAMES = f"tritonfleet_loadtest_requests_total{{{sel.VIDEO}}}"
# Refused handshakes that say a client is misconfigured; `closed` (an end of file OpenSSL reports
# mid-handshake) says nothing of a configuration. A client that goes away mid-handshake and a TCP
# probe (the chart's readiness probe behind TLS) are not counted at all (tests/observability/test_live_tls.py).
TLS_REFUSED = 'tritonfleet_gateway_tls_handshake_failures_total{reason!="closed"}'
# Alerts are per model and namespace, so one alert names one model of one deployment.
PER_MODEL = (sel.NAMESPACE, sel.MODEL)
# A camera request's whole time inside camera_stream (from `execute` to its answer sent).
CAMERA_TOTAL = 'tritonfleet_camera_request_phase_seconds_bucket{phase="total"}'
# One frame period of a 30 FPS camera: a frame that takes longer inside the model alone is late.
CAMERA_PERIOD_S = 0.033


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str
    # What on-call checks first and what usually fixes it (goes into RUNBOOK.md).
    runbook: str

    def rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{RUNBOOK_BASE}#{self.name.lower()}",
            },
        }


def ratio(numerator: str, denominator: str, by: tuple[str, ...] = PER_MODEL) -> str:
    """Sum both sides by model first, then divide: one busy pod outweighs an idle one."""
    return (f"{sel.sum_by(*by)} (rate({numerator}[{WINDOW}]))\n"
            f"  /\n{sel.sum_by(*by)} (rate({denominator}[{WINDOW}]))")


ALERTS = (
    Alert(
        name="TritonPodDown",
        expr=f"{sel.up(sel.TRITON)} == 0",
        duration="1m",
        severity="critical",
        summary="Triton server {{ $labels.instance }} is down",
        description="Prometheus has not been able to scrape Triton at {{ $labels.instance }} for a minute:"
                    " the server crashed, hangs, or its pod is gone.",
        runbook="Check `kubectl describe pod` and the previous container's log (`kubectl logs -p`):"
                " an OOM kill wants more memory or a smaller `shmSize`; a model load failure names the"
                " model in the log. The gateway has already taken the pod out of rotation.",
    ),
    Alert(
        name="TritonModelNoReadyBackend",
        expr=f"max by ({', '.join(PER_MODEL)}) (tritonfleet_gateway_backend_model_ready) == 0",
        duration="1m",
        severity="critical",
        summary="No Triton pod has model {{ $labels.model }} ready",
        description="The gateway sees model {{ $labels.model }} on no ready backend: every request for it"
                    " fails with UNAVAILABLE.",
        runbook="Look for load errors of the model in the Triton logs, then check that the pods are"
                " scheduled (GPU capacity, taints) and that the model repository has the model.",
    ),
    Alert(
        name="TritonQueueTimeHigh",
        expr=f"(\n{ratio('nv_inference_queue_duration_us', 'nv_inference_request_success')}\n) / 1000 > 100",
        duration="10m",
        severity="warning",
        summary="Requests for {{ $labels.model }} wait {{ $value | humanize }} ms in Triton's queue",
        description="The average queue time per request of model {{ $labels.model }} has been over 100 ms"
                    " for ten minutes: the fleet is short of capacity for this model.",
        runbook="Check the pending-requests panel: if every pod queues, scale out (or let the HPA/KEDA"
                " do it, and check it is not at maxReplicas); if one pod queues, the balance is off.",
    ),
    Alert(
        name="TritonErrorRateHigh",
        expr=f"(\n{ratio('nv_inference_request_failure', 'nv_inference_request_success')}\n) > 0.05",
        duration="5m",
        severity="critical",
        summary="Model {{ $labels.model }} fails {{ $value | humanizePercentage }} of its requests",
        description="Triton reports failed inferences of model {{ $labels.model }} above 5% of successful"
                    " ones for five minutes.",
        runbook="Read the `reason` label of nv_inference_request_failure and the Triton log: bad inputs"
                " from one client, a model bug, or rejected requests from a full queue.",
    ),
    Alert(
        name="GatewayErrorRateHigh",
        expr=f"(\n{ratio(GATEWAY_FAILED, 'tritonfleet_gateway_requests_total')}\n) > 0.05",
        duration="5m",
        severity="critical",
        summary="The gateway fails {{ $value | humanizePercentage }} of {{ $labels.model }} requests",
        description="More than 5% of the gateway's requests for model {{ $labels.model }} end with a"
                    " status other than OK, for five minutes.",
        runbook="The `code` label tells who failed: UNAVAILABLE means no ready backend (see"
                " TritonModelNoReadyBackend), INVALID_ARGUMENT means clients send bad requests.",
    ),
    Alert(
        name="GatewayDown",
        expr=f"{sel.up(sel.GATEWAY)} == 0",
        duration="1m",
        severity="critical",
        summary="Gateway {{ $labels.instance }} is down",
        description="Prometheus has not been able to scrape the gateway at {{ $labels.instance }} for a minute.",
        runbook="Check the gateway pod's events and log; clients of the Service reach the other replicas.",
    ),
    Alert(
        name="GatewayTLSHandshakesFailing",
        expr=f"{sel.sum_by(sel.NAMESPACE, 'reason')} (rate({TLS_REFUSED}[{WINDOW}])) > 0.05",
        duration="10m",
        severity="warning",
        summary="Clients keep failing TLS handshakes with the gateway: {{ $labels.reason }}",
        description="Over three client connections a minute have been refused at the TLS handshake with"
                    " reason {{ $labels.reason }} for ten minutes: those clients reach no model.",
        runbook="The reason says whose side is wrong. not_tls: a client sends plaintext to the TLS port"
                " (its channel wants TLS credentials). no_client_certificate / bad_client_certificate:"
                " under mutual TLS a client presents none, or one the client CA did not sign (a"
                " rotated client CA not yet in the TLS Secret's `ca.crt`). refused_by_client: clients do not"
                " trust the gateway's certificate (new CA not yet in their trust store, or the"
                " certificate's names). no_common_protocol: an old client (TLS < 1.2). The TLS"
                " handshakes panel of the Gateway dashboard shows when it began.",
    ),
    Alert(
        name="VideoStreamsLate",
        expr=f"(\n{ratio('tritonfleet_loadtest_frames_late_total', VIDEO_FRAMES)}\n) > 0.05",
        duration="5m",
        severity="warning",
        summary="{{ $value | humanizePercentage }} of {{ $labels.model }} video frames are late",
        description="More than 5% of video frames of model {{ $labels.model }} are answered after their"
                    " 1/FPS deadline, for five minutes.",
        runbook="Compare queue time and compute time on the Models dashboard: queueing wants more pods;"
                " compute time wants a faster model or a GPU.",
    ),
    Alert(
        name="VideoFramesDropped",
        expr=f"{sel.sum_by(*PER_MODEL)} (rate(tritonfleet_loadtest_frames_dropped_total[{WINDOW}])) > 0",
        duration="10m",
        severity="warning",
        summary="Video frames of {{ $labels.model }} are being dropped",
        description="Camera streams of model {{ $labels.model }} skip frames because the previous frame"
                    " is still in flight, for ten minutes.",
        runbook="Frames drop when one frame takes longer than the frame interval: see VideoStreamsLate.",
    ),
    Alert(
        name="CameraModelSlow",
        expr=f"histogram_quantile(0.99, {sel.sum_by(*PER_MODEL, 'le')} (rate({CAMERA_TOTAL}[{WINDOW}])))"
             f" > {CAMERA_PERIOD_S}",
        duration="10m",
        severity="warning",
        summary="1% of {{ $labels.model }} camera requests take over {{ $value | humanizeDuration }} in the model",
        description="For ten minutes the p99 of a camera request's time inside model {{ $labels.model }}"
                    " (from Triton handing it over to its answer) has been over one 30 FPS frame period"
                    " (33 ms): those cameras' frames are late before the network and Triton's queue add"
                    " theirs. Measured by the model itself, so it holds for every client, not only the"
                    " load generator.",
        runbook="The Video dashboard's time per request by phase says which stretch grew. lane_wait: a"
                " camera's requests queue behind its own earlier ones (its decode is slower than its"
                " frame rate, e.g. after a burst of keyframes or a camera sending catch-up frames);"
                " decode: the decoder is saturated (NVDEC sessions on the GPU: fewer cameras per GPU"
                " or more GPUs; on CPU, more cores); analysis_wait or analyze: the instance's analysis"
                " threads are behind, mostly on rounds that classify (more ANALYSIS_THREADS, so such a"
                " round holds back fewer cameras, or more camera_stream instances); respond: answers wait on Triton or"
                " the client. The open decoder sessions panel shows how many cameras each model holds.",
    ),
)


def rule_groups() -> dict:
    return {"groups": [{"name": "tritonfleet.alerts", "rules": [alert.rule() for alert in ALERTS]}]}


def runbook_markdown() -> str:
    lines = ["# tritonfleet alert runbook", "",
             "Generated from observability/rules.py by `tritonfleet render-dashboards` — do not edit.", ""]
    for alert in ALERTS:
        lines += [f"## {alert.name}", "", f"Severity: **{alert.severity}**. {alert.description}", "",
                  "```promql", alert.expr, "```", "", alert.runbook, ""]
    return "\n".join(lines)
