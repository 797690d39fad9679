"""Render the chart with the real helm binary and hand back its objects."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts/tritonfleet"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE, NAMESPACE = "fleet", "inference"
OPERATOR_APIS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")


def helm_binary() -> str:
    path = REPO_ROOT / ".venv/bin/helm"
    if path.exists():
        return str(path)
    found = shutil.which("helm")
    if not found:
        pytest.skip("helm is not installed (make install runs deploy/scripts/install-k8s-tools.sh)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


@functools.lru_cache(maxsize=None)
def render(values_file: str | None = None, sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = (),
           show_only: str | None = None) -> tuple[dict, ...]:
    """Every object `helm template` renders (tests/ hooks included), as dicts."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file:
        args += ["-f", values_file]
    for value in sets:
        args += ["--set", value]
    for api in api_versions:
        args += ["--api-versions", api]
    output = helm(*args).stdout
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def render_error(*sets: str) -> str:
    """helm template's error message for values that must be refused."""
    args = ["template", RELEASE, str(CHART)]
    for value in sets:
        args += ["--set", value]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"helm accepted {sets}"
    return result.stderr


def by_kind(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind: str, component: str | None = None) -> dict:
    found = [o for o in by_kind(objects, kind)
             if component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objects) -> list[tuple[str, dict]]:
    """(object name, pod spec) of every workload and bare Pod."""
    specs = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            specs.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((obj["metadata"]["name"], obj["spec"]))
    return specs
