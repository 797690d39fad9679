"""The names every query selects on, defined once: the Prometheus job of each part of the system and
the label names of its metrics. The alert rules, the dashboards, the local Prometheus config, the live
page and the tests build their selectors from here; the chart's ServiceMonitors set the same job names
(charts/tritonfleet/templates/servicemonitors.yaml, checked by tests/observability)."""

from __future__ import annotations

# Prometheus jobs: one per part of the system, in the local stack and in the cluster alike.
TRITON = "triton"
GATEWAY = "gateway"
LOADTEST = "loadtest"
JOBS = (TRITON, GATEWAY, LOADTEST)

# Which job a metric comes from, by its name's prefix.
METRIC_PREFIXES = {
    TRITON: ("nv_inference_", "tritonfleet_camera_"),  # Triton's own and the camera model's custom metrics
    GATEWAY: ("tritonfleet_gateway_",),
    LOADTEST: ("tritonfleet_loadtest_",),
}

# Label names of those metrics (Triton's, the gateway's and the load generator's) and Prometheus' own.
MODEL = "model"
BACKEND = "backend"
CODE = "code"
WORKLOAD = "workload"
STATUS = "status"
INSTANCE = "instance"
NAMESPACE = "namespace"
JOB = "job"

# The dashboards' model variable, as a matcher.
MODEL_VARIABLE = f'{MODEL}=~"$model"'
VIDEO = f'{WORKLOAD}="video"'
ANSWERED = f'{STATUS}="ok"'
NOT_OK = f'{CODE}!="OK"'


def up(job: str) -> str:
    """`up` of one job: whether Prometheus could scrape each of its targets."""
    return f'up{{{JOB}="{job}"}}'


def sum_by(*labels: str) -> str:
    return f"sum by ({', '.join(labels)})"


def job_of(expr: str) -> set[str]:
    """The jobs whose metrics a query reads."""
    jobs = {job for job, prefixes in METRIC_PREFIXES.items() if any(prefix in expr for prefix in prefixes)}
    return jobs | {job for job in JOBS if up(job) in expr}
