"""The panels of the Grafana dashboards, read back from their JSON for the live page and the PNGs.

Reading the generated JSON (not the grafanalib objects) means the live page draws exactly what
Grafana would: same titles, units, queries and legends. Grafana's variables are filled in here.
"""

from __future__ import annotations

import re

from observability.dashboards import all_dashboards
from observability.selectors import job_of



def fill_variables(expr: str, rate_interval: str, model: str = ".+") -> str:
    return expr.replace("$__rate_interval", rate_interval).replace("$model", model)


def sources(expr: str) -> set[str]:
    """Which parts of the system (Prometheus jobs) a query needs data from."""
    return job_of(expr)


def legend(template: str, labels: dict) -> str:
    """Grafana's legendFormat: {{label}} replaced by the series' label value."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or ", ".join(f"{k}={v}" for k, v in labels.items()) or "value"


def live_dashboards(rate_interval: str = "1m", model: str = ".+") -> list[dict]:
    """Every dashboard as {uid, title, panels: [{title, type, unit, description, width, targets}]}."""
    boards = []
    for board in all_dashboards().values():
        panels = []
        for panel in board["panels"]:
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit") or panel.get("format", "")
            targets = [{"expr": fill_variables(t["expr"], rate_interval, model), "legend": t.get("legendFormat", "")}
                       for t in panel["targets"]]
            panels.append({
                "title": panel["title"], "type": panel["type"], "unit": unit,
                "description": panel.get("description", ""), "width": panel["gridPos"]["w"],
                "targets": targets,
                "sources": sorted(set().union(*(sources(t["expr"]) for t in targets))),
            })
        boards.append({"uid": board["uid"], "title": board["title"], "panels": panels})
    return boards


def find_panel(boards: list[dict], dashboard_uid: str, title: str) -> dict:
    for board in boards:
        if board["uid"] == dashboard_uid:
            for panel in board["panels"]:
                if panel["title"] == title:
                    return panel
    raise ValueError(f"no panel {title!r} on dashboard {dashboard_uid!r}")
