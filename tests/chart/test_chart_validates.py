"""helm lint and helm template for every values file in charts/tritonfleet/ci/, and every rendered
object against the Kubernetes 1.35 schemas (kubernetes-validate) or its CRD's schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.chart.chart_render import CHART, CI_VALUES, OPERATOR_APIS, helm, render

KUBERNETES_VERSION = "1.35.0"
CRD_SCHEMAS = {path.stem: json.loads(path.read_text())
               for path in (Path(__file__).parent / "crd_schemas").glob("*.json")}
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject", "Certificate"}
CASES = [pytest.param(str(path), (), id=path.stem) for path in CI_VALUES] + [
    pytest.param(str(CHART / "ci/operator-values.yaml"), OPERATOR_APIS, id="operator-values+crds-detected"),
    pytest.param(None, OPERATOR_APIS, id="defaults+crds-detected"),
]


def test_there_is_a_values_file_per_feature():
    names = {path.stem for path in CI_VALUES}
    assert {"cpu-values", "gpu-values", "envoy-values", "keda-values", "hpa-values", "pvc-values",
            "objectstorage-values", "networkpolicy-values", "operator-values"} <= names


@pytest.mark.parametrize("values_file", [str(p) for p in CI_VALUES], ids=[p.stem for p in CI_VALUES])
def test_helm_lint_strict(values_file):
    result = helm("lint", "--strict", str(CHART), "-f", values_file)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file, apis", CASES)
def test_every_object_validates(values_file, apis):
    objects = render(values_file, api_versions=apis)
    assert objects, "helm template rendered nothing"
    failures = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            if obj["kind"] in CRD_KINDS:
                jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"].lower()])
            else:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            failures.append(f"{name}: {getattr(exc, 'message', exc)}")
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{name}: no Kubernetes {KUBERNETES_VERSION} schema for {obj['apiVersion']}")
    assert not failures, "\n".join(failures)


def test_crd_schemas_catch_a_misspelt_key():
    """The vendored CRD schemas are strict enough to fail: a typo in a ServiceMonitor is refused."""
    monitor = next(o for o in render(None, api_versions=OPERATOR_APIS) if o["kind"] == "ServiceMonitor")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoint"] = broken["spec"].pop("endpoints")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CRD_SCHEMAS["servicemonitor"])


def test_kubernetes_schemas_catch_a_wrong_field():
    deployment = next(o for o in render(None) if o["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
