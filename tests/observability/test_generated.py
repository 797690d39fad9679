"""The generated dashboards, rules and Prometheus config: up to date, valid for promtool, alerts
that fire on their input series, and queries that use only the metric names of docs/METRICS.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from observability.cli import register
from observability import selectors
from observability.dashboards import all_dashboards
from observability.live_server import make_server
from observability.render import generated_files
from observability.rules import ALERTS
from tests.chart.chart_render import render
from tritonfleet.paths import DEFAULT_STACK
from tritonfleet.stack_config import load_stack_config

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy/prometheus"
METRIC = re.compile(r"\b(nv_inference_[a-z_]+|tritonfleet_[a-z_]+)\b")


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (make system installs prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_generated_files_are_up_to_date():
    stale = [str(p.relative_to(REPO_ROOT)) for p, text in generated_files().items()
             if not p.exists() or p.read_text() != text]
    assert not stale, f"run `tritonfleet render-dashboards`: {stale}"


def test_generated_files_say_so():
    for path, text in generated_files().items():
        assert "do not edit" in text.splitlines()[0] + text[:300], path


@pytest.mark.parametrize("rules", ["deploy/prometheus/tritonfleet.rules.yaml",
                                   "charts/tritonfleet/files/rules/tritonfleet.rules.yaml"])
def test_promtool_checks_the_rules(rules):
    result = promtool("check", "rules", str(REPO_ROOT / rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_rule_tests_fire_each_alert_and_none_on_a_healthy_fleet():
    test_file = PROMETHEUS_DIR / "tests/tritonfleet.rules.test.yaml"
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    cases = yaml.safe_load(test_file.read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    assert fired == {alert.name for alert in ALERTS}


def test_promtool_rule_tests_can_fail(tmp_path):
    """The same tests against rules whose pod-down threshold never trips must fail."""
    pod_down = selectors.up(selectors.TRITON)
    rules = (PROMETHEUS_DIR / "tritonfleet.rules.yaml").read_text().replace(f"{pod_down} == 0", f"{pod_down} < 0")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tritonfleet.rules.yaml").write_text(rules)
    shutil.copy(PROMETHEUS_DIR / "tests/tritonfleet.rules.test.yaml", tmp_path / "tests")
    result = promtool("test", "rules", str(tmp_path / "tests/tritonfleet.rules.test.yaml"))
    assert result.returncode != 0 and "TritonPodDown" in result.stdout + result.stderr


def test_promtool_checks_the_local_prometheus_config():
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_a_runbook_entry():
    runbook = (PROMETHEUS_DIR / "RUNBOOK.md").read_text()
    for alert in ALERTS:
        rule = alert.rule()
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert f"## {alert.name}" in runbook and anchor == alert.name.lower()


def test_queries_use_only_the_documented_metric_names():
    documented = set(METRIC.findall((REPO_ROOT / "docs/METRICS.md").read_text()))
    exprs = [t["expr"] for board in all_dashboards().values() for p in board["panels"] for t in p["targets"]]
    exprs += [alert.expr for alert in ALERTS]
    used = {name.removesuffix("_bucket") for expr in exprs for name in METRIC.findall(expr)}
    assert used and not used - documented, f"undocumented metrics: {used - documented}"


def test_dashboards_have_unique_panel_ids_and_a_datasource_variable():
    for name, board in all_dashboards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        assert board["templating"]["list"][0]["type"] == "datasource"
        assert all(t["datasource"] == "${datasource}" for p in board["panels"] for t in p["targets"])


def run_cli(*argv: str) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_render_check_passes_on_the_committed_files():
    assert run_cli("render-dashboards", "--check") == 0


def test_dashboard_refuses_a_prometheus_that_is_not_a_url(capsys):
    assert run_cli("dashboard", "--prometheus", "localhost:9090") == 2
    assert "--prometheus must be an http(s) URL" in capsys.readouterr().err


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_live_server_serves_the_page_and_relays_only_range_queries(prometheus):
    server = make_server(prometheus.url, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, page = get(base + "/")
        assert status == 200
        config = json.loads(re.search(rb'<script id="config" type="application/json">(.*?)</script>', page, re.S)[1])
        assert [b["uid"] for b in config["dashboards"]] == [b["uid"] for b in all_dashboards().values()]
        assert b"<script src" not in page and b"<link" not in page  # self-contained
        status, body = get(base + "/api/v1/query_range?query=up&start=0&end=10&step=1")
        assert status == 200 and json.loads(body)["status"] == "success"
        status, body = get(base + "/api/v1/query_range?query=sum(&start=0&end=10&step=1")
        assert status == 400 and "parse error" in json.loads(body)["error"]
        assert get(base + "/api/v1/admin/tsdb/delete_series")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_chart_scrapes_each_part_under_the_job_name_the_queries_select_on():
    objects = render(sets=("monitoring.prometheusOperator=true", "loadtest.enabled=true"))
    monitors = [o for o in objects if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    jobs = {relabel["replacement"]
            for monitor in monitors
            for endpoint in monitor["spec"].get("endpoints", []) + monitor["spec"].get("podMetricsEndpoints", [])
            for relabel in endpoint.get("relabelings", []) if relabel.get("targetLabel") == selectors.JOB}
    assert jobs == set(selectors.JOBS)


def test_every_panel_query_reads_from_a_known_job():
    for board in all_dashboards().values():
        for panel in board["panels"]:
            for target in panel["targets"]:
                assert selectors.job_of(target["expr"]), (board["uid"], panel["title"], target["expr"])
    assert selectors.job_of(f'sum({selectors.up(selectors.GATEWAY)})') == {selectors.GATEWAY}
    assert selectors.job_of("sum(rate(nv_inference_count[1m])) / sum(tritonfleet_gateway_inflight)") == {
        selectors.TRITON, selectors.GATEWAY}


def test_the_local_stack_names_its_scrape_jobs_as_the_queries_do():
    # The stack's Prometheus names each job after its service (tritonfleet/stack.py).
    scraped = [s.name for s in load_stack_config(DEFAULT_STACK).services if s.kind == "triton" or s.metrics_path]
    assert scraped and set(scraped) <= set(selectors.JOBS), scraped
