"""The chart's README, helm-docs style: every value with its type, default and the `# --` comment
written above it in values.yaml."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w.-]*):")
DOC_LINE = re.compile(r"^\s*# -- (.*)$")

INTRO = """# tritonfleet Helm chart

<!-- {header} -->

A fleet of NVIDIA Triton Inference Server pods behind a request-level gRPC gateway (or Envoy), with
startup/readiness/liveness probes on Triton's health endpoints, a preStop drain, PodDisruptionBudgets,
topology spread, HPA v2 or KEDA autoscaling on queued requests per pod, a NetworkPolicy, Prometheus
Operator monitors and alert rules (or scrape annotations), Grafana dashboards, a load-test Job and a
`helm test` inference. Kubernetes >= 1.28.

```bash
helm install fleet charts/tritonfleet -n inference --create-namespace \\
  --set monitoring.release=kube-prometheus-stack -f charts/tritonfleet/ci/gpu-values.yaml
helm test fleet -n inference --logs
```

`ci/` holds one values file per feature combination (CPU-only, GPU, Envoy, KEDA, HPA, PVC or object
storage repository, NetworkPolicy, Prometheus Operator); each one is rendered and validated in CI.

## Autoscaling with prometheus-adapter (`triton.autoscaling.mode: hpa`)

The HPA reads a per-pod metric: Triton's queued requests, summed over the pod's models first.

```yaml
rules:
  custom:
    - seriesQuery: 'nv_inference_pending_request_count{{namespace!="",pod!=""}}'
      resources: {{overrides: {{namespace: {{resource: namespace}}, pod: {{resource: pod}}}}}}
      name: {{as: tritonfleet_pending_requests}}
      metricsQuery: 'sum by (<<.GroupBy>>) (<<.Series>>{{<<.LabelMatchers>>}})'
```

The rule ships as values for the adapter's chart, `files/prometheus-adapter-values.yaml`
(`helm install prometheus-adapter prometheus-community/prometheus-adapter -f` that file); CI runs
it with promtool against recorded Triton series.

## Load-test Job: several pods, results that outlive them, a CI gate

`loadtest.pods: N` renders an Indexed Job (`parallelism = completions = N`): the N generators are
created at once and each runs the whole `loadtest.args` load. Each pod prints its result as one
JSON line, the last line of its log, and writes it to `pod-<index>.json` (on
`loadtest.results.persistentVolumeClaim` when set, in a `<release>-<revision>` folder). Thresholds in
`args` (`--max-p99-ms`, `--max-error-rate`, `--min-fps`, ...) make a pod exit 99 when missed, which
fails the Job at once (a pod failure policy: no retry). Gather and merge the pods' results:

```bash
job=fleet-tritonfleet-loadtest
kubectl -n inference wait --for=condition=complete job/$job --timeout=15m
for i in 0 1 2 3; do
  kubectl -n inference logs --tail=-1 -l batch.kubernetes.io/job-name=$job,batch.kubernetes.io/job-completion-index=$i > pod-$i.json
done
tritonfleet loadtest report pod-*.json --format html -o loadtest.html --max-p99-ms 66 --min-fps 14
```

`report` reads a saved result or a captured log ending in one. Merging adds the counts and the
latency histograms second by second from each pod's own start (percentiles come from the merged
histograms, never averaged), keeps every pod's camera streams as streams of their own, sums the
servers' shares, and checks the thresholds on the merged run.

## Values

| Key | Type | Default | Description |
| --- | --- | --- | --- |
"""


def documented_values(values_text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a `# --` comment above it, in file order."""
    entries, stack, pending = [], [], None
    for line in values_text.splitlines():
        doc = DOC_LINE.match(line)
        if doc:
            pending = doc.group(1)
            continue
        key = KEY_LINE.match(line)
        if not key:
            continue
        depth = len(key.group(1)) // 2
        stack = stack[:depth] + [key.group(2)]
        if pending is not None:
            entries.append((".".join(stack), pending))
        pending = None
    return entries


def lookup(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


def type_name(value) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "string")


def chart_readme(chart_dir: Path, header: str) -> str:
    text = (chart_dir / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = []
    for key, description in documented_values(text):
        value = lookup(values, key)
        default = json.dumps(value, separators=(",", ":")).replace("|", "\\|")
        description = description.replace("|", "\\|")
        rows.append(f"| {key} | {type_name(value)} | `{default}` | {description} |")
    return INTRO.format(header=header) + "\n".join(rows) + "\n"
