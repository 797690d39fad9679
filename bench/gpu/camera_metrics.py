"""What the camera model published on Triton's metrics endpoint during one load-test run: its step
counters as ms per analysis round, and its requests' phases (`tritonfleet_camera_request_phase_seconds`)
as quantiles, each summed over the model's instances.

Read from the text format by hand: the stub's environment on the GPU machine carries no Prometheus
client, and only a few families of plain `name{labels} value` lines are needed.
"""

from __future__ import annotations

import re
import urllib.request

STEP_FAMILIES = ("tritonfleet_camera_steps_total", "tritonfleet_camera_step_requests_total",
                 "tritonfleet_camera_step_seconds_total", "tritonfleet_camera_frames_decoded_total")
STEP_PHASES = ("parse", "decode", "analyze", "respond")
# models.camera.RequestPhases.PHASES, named here so that reading them needs neither torch nor the model.
REQUEST_PHASES = ("lane_wait", "decode", "analysis_wait", "analyze", "respond", "total")
PHASE_BUCKETS = "tritonfleet_camera_request_phase_seconds_bucket"
PHASE_SUMS = "tritonfleet_camera_request_phase_seconds_sum"
QUANTILES = (0.5, 0.9, 0.99)
LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def read(metrics_url: str) -> str:
    """The endpoint's text; empty when it cannot be read (the run's record then says nothing of it)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as reply:
            return reply.read().decode()
    except OSError:
        return ""


def samples(text: str, names: tuple[str, ...]):
    """(name, labels, value) of every labelled sample of the families in `names`."""
    for line in text.splitlines():
        match = LINE.match(line)
        if match and match.group(1) in names:
            yield match.group(1), dict(LABEL.findall(match.group(2))), float(match.group(3))


def step_totals(text: str) -> dict[str, float]:
    """The step counters, keyed by phase for the seconds and by short name for the rest."""
    totals: dict[str, float] = {}
    for name, labels, value in samples(text, STEP_FAMILIES):
        key = labels.get("phase") or name.removeprefix("tritonfleet_camera_").removesuffix("_total")
        totals[key] = totals.get(key, 0.0) + value
    return totals


def per_step(before_text: str, after_text: str) -> dict:
    """What one run added: executions, requests per execution, and ms per execution in each phase."""
    before, after = step_totals(before_text), step_totals(after_text)
    steps = after.get("steps", 0) - before.get("steps", 0)
    if steps <= 0:
        return {}
    out = {"steps": int(steps), "requests_per_step": round((after.get("step_requests", 0) - before.get("step_requests", 0)) / steps, 2)}
    frames = after.get("frames_decoded", 0) - before.get("frames_decoded", 0)
    out["frames_per_step"] = round(frames / steps, 2)
    for phase in STEP_PHASES:
        out[f"{phase}_ms"] = round((after.get(phase, 0) - before.get(phase, 0)) / steps * 1e3, 2)
    return out


def phase_histograms(text: str) -> dict[str, dict]:
    """Per phase: cumulative bucket counts by upper bound ({le: count}) and the sum of seconds."""
    out: dict[str, dict] = {}
    for name, labels, value in samples(text, (PHASE_BUCKETS, PHASE_SUMS)):
        phase = out.setdefault(labels.get("phase", ""), {"buckets": {}, "sum": 0.0})
        if name == PHASE_SUMS:
            phase["sum"] += value
        else:
            le = float(labels["le"])  # "+Inf" reads as inf
            phase["buckets"][le] = phase["buckets"].get(le, 0.0) + value
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) pairs, +Inf last: linear
    inside the bucket the rank falls in; in the +Inf bucket, the highest finite bound."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def request_phases(before_text: str, after_text: str) -> dict:
    """What one run added, per phase: requests, mean and the QUANTILES in ms (estimated from the
    buckets, so as fine as their bounds)."""
    before, after = phase_histograms(before_text), phase_histograms(after_text)
    out = {}
    for phase, now in after.items():
        then = before.get(phase, {"buckets": {}, "sum": 0.0})
        delta = sorted((le, count - then["buckets"].get(le, 0.0)) for le, count in now["buckets"].items())
        requests = delta[-1][1] if delta else 0.0
        if requests <= 0:
            continue
        out[phase] = {"requests": int(requests), "mean_ms": round((now["sum"] - then["sum"]) / requests * 1e3, 2),
                      **{f"p{round(q * 100)}_ms": round(quantile(q, delta) * 1e3, 2) for q in QUANTILES}}
    return out
