"""The rendered chart runs: the images `make images` builds, `helm template` with ci/local-values.yaml,
and every rendered pod started by tritonfleet.chart_runner with podman (runc), each pod on its own
network namespace as on a pod network. The Triton pods and the gateway start from the images and
answer the chart's probes, the gateway balances over both Triton pods, and the chart's `helm test`
pod runs its inference and passes.

The images are built once: their tags are hashes of their inputs, so a later run reuses them."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.chart.chart_render import CHART, NAMESPACE, RELEASE, helm
from tritonfleet.chart_runner import ChartRun, can_run
from tritonfleet.paths import REPO_ROOT
from tests.polling import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

BUILD = REPO_ROOT / "deploy/docker/build-images.sh"
INSTALL_TOOLS = REPO_ROOT / "deploy/scripts/install-container-tools.sh"


def samples(url: str, name: str) -> dict[frozenset, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {frozenset(s.labels.items()): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name in (name, name + "_total")}


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    # Installs podman, buildah, runc, mmdebstrap and skopeo where apt can; can_run() says why not.
    subprocess.run([str(INSTALL_TOOLS)], cwd=REPO_ROOT, capture_output=True, timeout=900)
    reason = can_run()
    if reason:
        pytest.skip(reason)
    # The archives are `make images`' output; the test saves one itself (below), in less time.
    built = subprocess.run([str(BUILD), "--no-archives"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500)
    assert built.returncode == 0, built.stderr[-4000:]
    names = built.stdout.split()
    return {name.split("/")[-1].split(":")[0]: name for name in names}


@pytest.fixture(scope="module")
def cluster(images):
    tags = {image: name.rsplit(":", 1)[1] for image, name in images.items()}
    rendered = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                    "-f", str(CHART / "ci/local-values.yaml"),
                    "--set", f"triton.image.tag={tags['triton']}", "--set", f"gateway.image.tag={tags['app']}").stdout
    with ChartRun(list(yaml.safe_load_all(rendered)), NAMESPACE) as run:
        pods = run.start()
        for pod in pods:
            run.wait_ready(pod)
        yield run


def pods_of(cluster, component: str):
    return [p for p in cluster.pods if p.labels.get("app.kubernetes.io/component") == component]


def test_every_rendered_probe_answers(cluster):
    for pod in cluster.pods:
        for container in pod.spec["containers"]:
            kinds = [k for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container]
            assert kinds, f"{pod.name}/{container['name']} has no probes"
            for kind in kinds:
                assert cluster.probe(pod, container, container[kind]), f"{pod.name}: {kind} fails"


def test_an_image_saved_as_an_oci_archive_is_one_skopeo_reads(images, tmp_path):
    archive = tmp_path / "app.oci.tar"
    subprocess.run(["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(archive), images["app"]],
                   check=True, timeout=600)
    inspected = subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{archive}"],
                               capture_output=True, text=True, timeout=300)
    assert inspected.returncode == 0, inspected.stderr
    config = json.loads(inspected.stdout)
    assert config["architecture"] == "amd64" and config["config"]["User"] == "10001:10001"


def test_triton_pods_load_only_the_explicitly_named_model(cluster):
    for pod in pods_of(cluster, "triton"):
        # The same Triton as the local stack and every test: the locked nvidia-pytriton's 2.51.
        metadata = json.loads(urllib.request.urlopen(f"http://{pod.ip}:8000/v2", timeout=10).read())
        assert metadata["version"] == "2.51.0", metadata
        request = urllib.request.Request(f"http://{pod.ip}:8000/v2/repository/index", data=b"{}", method="POST")
        index = json.loads(urllib.request.urlopen(request, timeout=10).read())
        ready = sorted(m["name"] for m in index if m.get("state") == "READY")
        assert ready == ["image_preprocess"], index
        # The series the prometheus-adapter rule sums per pod is what this Triton exports.
        pending = samples(f"http://{pod.ip}:8002/metrics", "nv_inference_pending_request_count")
        assert frozenset({("model", "image_preprocess"), ("version", "1")}) in pending


def test_the_gateway_balances_over_both_triton_pods(cluster):
    (gateway,) = pods_of(cluster, "gateway")
    tritons = pods_of(cluster, "triton")
    assert len(tritons) == 2
    metrics = f"http://{gateway.ip}:9100/metrics"
    wait_until(lambda: sum(samples(metrics, "tritonfleet_gateway_backend_model_ready").values()) == 2,
             "the gateway to see image_preprocess ready on both pods", timeout=120)
    client = grpcclient.InferenceServerClient(f"{gateway.ip}:8001")
    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    for _ in range(20):
        tensor = grpcclient.InferInput("FRAMES", list(frames.shape), "UINT8")
        tensor.set_data_from_numpy(frames)
        assert client.infer("image_preprocess", [tensor]).as_numpy("PIXELS").shape == (1, 3, 224, 224)
    client.close()
    for pod in tritons:
        served = samples(f"http://{pod.ip}:8002/metrics", "nv_inference_request_success")
        assert served[frozenset({("model", "image_preprocess"), ("version", "1")})] > 0, pod.name


def test_the_helm_test_pod_passes(cluster):
    results = cluster.run_tests()
    assert [name for name, _, _ in results] == [f"{RELEASE}-tritonfleet-test-inference"]
    (_, code, log), = results
    assert code == 0, log
    assert "inference through the gateway OK: (1, 3, 224, 224)" in log
