"""The prometheus-adapter rule the HPA mode relies on (charts/tritonfleet/files/), run by the real
promtool: its series query finds Triton's queue metric per pod, and its metrics query, expanded as the
adapter expands it for a pods metric, gives each pod's queue summed over its models."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.chart.chart_render import CHART

ADAPTER_VALUES = CHART / "files/prometheus-adapter-values.yaml"
PODS = ("fleet-tritonfleet-triton-5d9c-a", "fleet-tritonfleet-triton-5d9c-b")

# Triton's own labels (model, version) plus the namespace and pod that the scrape adds; one pod
# in another namespace and one series scraped without pod labels, which the rule must leave out.
INPUT_SERIES = [
    ('nv_inference_pending_request_count{namespace="inference",pod="%s",model="image_preprocess",version="1"}' % PODS[0], "3+0x10"),
    ('nv_inference_pending_request_count{namespace="inference",pod="%s",model="image_classifier",version="1"}' % PODS[0], "2+0x10"),
    ('nv_inference_pending_request_count{namespace="inference",pod="%s",model="image_preprocess",version="1"}' % PODS[1], "0+2x10"),
    ('nv_inference_pending_request_count{namespace="staging",pod="%s",model="image_preprocess",version="1"}' % PODS[0], "40+0x10"),
    ('nv_inference_pending_request_count{model="image_preprocess",version="1"}', "7+0x10"),
]


def adapter_rule() -> dict:
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rule


def expand(metrics_query: str, series: str) -> str:
    """What prometheus-adapter sends for `kubectl get --raw .../namespaces/inference/pods/*/<metric>`."""
    matchers = 'namespace="inference",pod=~"%s"' % "|".join(PODS)
    return (metrics_query.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (Debian's prometheus package; make system installs it)")
    return found


def test_the_rule_serves_the_metric_name_the_hpa_asks_for():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rule = adapter_rule()
    assert rule["name"]["as"] == values["triton"]["autoscaling"]["hpaMetricName"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_promtool_evaluates_the_rule_to_each_pods_whole_queue(tmp_path):
    rule = adapter_rule()
    series = rule["name"]["matches"].strip("^$")
    rules = {"groups": [{"name": "prometheus-adapter", "rules": [
        {"record": "adapter:series", "expr": f"count by (namespace, pod) ({rule['seriesQuery']})"},
        {"record": "adapter:metric", "expr": expand(rule["metricsQuery"], series)},
    ]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool(), "check", "rules", str(tmp_path / "rules.yaml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    at_5m = [{"labels": 'adapter:metric{pod="%s"}' % PODS[0], "value": 5},
             {"labels": 'adapter:metric{pod="%s"}' % PODS[1], "value": 10}]
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in INPUT_SERIES],
        "promql_expr_test": [
            {"expr": "adapter:metric", "eval_time": "5m", "exp_samples": at_5m},
            {"expr": "adapter:series", "eval_time": "5m", "exp_samples": [
                {"labels": 'adapter:series{namespace="inference",pod="%s"}' % PODS[0], "value": 2},
                {"labels": 'adapter:series{namespace="inference",pod="%s"}' % PODS[1], "value": 1},
                {"labels": 'adapter:series{namespace="staging",pod="%s"}' % PODS[0], "value": 1},
            ]},
        ],
    }]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
