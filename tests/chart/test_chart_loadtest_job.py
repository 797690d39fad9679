"""The load-test Job's template branches: an Indexed Job of `pods` generators, results written per
pod index (to the log's last line, and to a claim when one is named), and a missed threshold failing
the Job without a retry."""

from __future__ import annotations

import pytest

from loadtest.thresholds import THRESHOLDS_MISSED
from tests.chart.chart_render import CHART, one, render, render_error
from tritonfleet.cli import build_parser

LOADTEST_CI = str(CHART / "ci/loadtest-values.yaml")


def job_of(objects) -> tuple[dict, dict]:
    job = one(objects, "Job", "loadtest")
    return job, job["spec"]["template"]["spec"]


def test_one_pod_by_default_writes_its_index_and_prints_its_result():
    job, pod = job_of(render(None, sets=("loadtest.enabled=true",)))
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 1, 1)
    container = pod["containers"][0]
    assert "--output=/tmp/pod-$(JOB_COMPLETION_INDEX).json" in container["args"]
    assert "--print-result" in container["args"]
    # `$(VAR)` in args expands only from variables the container spec declares.
    index = next(env for env in container["env"] if env["name"] == "JOB_COMPLETION_INDEX")
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "fsGroup" not in pod["securityContext"]


def test_ci_values_start_four_pods_that_write_to_the_claim_per_revision():
    job, pod = job_of(render(LOADTEST_CI))
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 4, 4)
    container = pod["containers"][0]
    assert "--output=/results/pod-$(JOB_COMPLETION_INDEX).json" in container["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["results"]["persistentVolumeClaim"] == {"claimName": "loadtest-results"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "results")
    assert mount == {"name": "results", "mountPath": "/results", "subPath": "fleet-1"}
    # The generator runs as a non-root user; the claim's files must be its group's.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    # The real CLI takes the rendered command line, thresholds included.
    args = build_parser().parse_args(container["command"][1:] + container["args"])
    assert (args.workload, args.min_fps, args.max_error_rate, args.print_result) == ("video", 14.0, 0.0, True)


def test_several_pods_wait_for_each_other_by_their_names_under_a_headless_service():
    objects = render(LOADTEST_CI)
    job, pod = job_of(objects)
    service = one(objects, "Service", "loadtest")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == job["spec"]["template"]["metadata"]["labels"]
    assert pod["subdomain"] == service["metadata"]["name"]
    # The Job's hook creates the Service first, so the names exist as the pods do.
    assert int(service["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
    args = build_parser().parse_args(pod["containers"][0]["command"][1:] + pod["containers"][0]["args"])
    name, namespace = job["metadata"]["name"], job["metadata"].get("namespace", "inference")
    assert args.wait_for_peers.split(",") == [f"{name}-{i}.{name}.{namespace}.svc.cluster.local" for i in range(4)]
    assert (args.peers_timeout, args.start_align_s) == (600.0, 10.0)


def test_one_pod_waits_for_no_peer():
    objects = render(None, sets=("loadtest.enabled=true",))
    _, pod = job_of(objects)
    assert "subdomain" not in pod
    assert not [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-loadtest")]
    assert not any(a.startswith("--wait-for-peers") for a in pod["containers"][0]["args"])


def test_a_missed_threshold_fails_the_job_without_a_retry():
    job, pod = job_of(render(LOADTEST_CI, sets=("loadtest.backoffLimit=3",)))
    assert job["spec"]["backoffLimit"] == 3
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    # The code `tritonfleet loadtest` exits with when a threshold is missed.
    assert rule["onExitCodes"] == {"containerName": pod["containers"][0]["name"], "operator": "In",
                                   "values": [THRESHOLDS_MISSED]}


def test_results_can_stay_out_of_the_log():
    _, pod = job_of(render(None, sets=("loadtest.enabled=true", "loadtest.results.printToLog=false")))
    assert "--print-result" not in pod["containers"][0]["args"]


@pytest.mark.parametrize("sets, message", [
    (("loadtest.pods=0",), "/loadtest/pods"),
    (("loadtest.results.persistentVolumeClaim=Results_Claim",), "/loadtest/results/persistentVolumeClaim"),
    (("loadtest.results.keep=true",), "additional properties 'keep' not allowed"),
])
def test_bad_loadtest_values_are_refused(sets, message):
    assert message in render_error(*sets)
