"""The chart's load-test Job, its command run as its pods would run it: each pod's log ends in its
result, and `tritonfleet loadtest report pod-*.json` merges the captured logs and gates on them."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from loadtest.results import RunResult
from loadtest.thresholds import THRESHOLDS_MISSED
from tests.chart.chart_render import one, render
from tritonfleet.cli import main as cli_main
from tritonfleet.triton_server import free_port

PODS = 2
VALUES = {"loadtest": {"enabled": True, "workload": "image", "pods": PODS, "args": [
    "--model", "tiny_image", "--rate", "20", "--duration", "1", "--warmup", "0", "--workers", "1",
    "--max-error-rate", "0"]}}


def pod_command(url: str, index: int, results_dir) -> list[str]:
    """The rendered container's command line, with what the cluster would supply filled in: the
    index the Job controller sets, a reachable address, a local folder, a free metrics port, and
    peers' names that resolve (a one-second start beat, so the test does not wait ten)."""
    values = results_dir / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    job = one(render(str(values)), "Job", "loadtest")
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == PODS
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = []
    for arg in container["args"]:
        arg = arg.replace("$(JOB_COMPLETION_INDEX)", str(index)).replace("--output=/tmp/", f"--output={results_dir}/")
        if arg.startswith("--url="):
            arg = f"--url={url}"
        elif arg.startswith("--metrics-port="):
            arg = f"--metrics-port={free_port()}"
        elif arg.startswith("--wait-for-peers="):
            # The cluster's DNS names of the other pods, each existing: here, names that resolve.
            assert len(arg.split("=", 1)[1].split(",")) == PODS
            arg = "--wait-for-peers=" + ",".join(["localhost"] * PODS)
        elif arg.startswith("--start-align-s="):
            arg = "--start-align-s=1"
        args.append(arg)
    return [sys.executable, "-m", "tritonfleet.cli", *container["command"][1:], *args]


def test_pod_logs_end_in_their_results_and_report_merges_them(tiny_server, tmp_path, capsys):
    logs = []
    for index in range(PODS):
        # One pipe for both streams, in the order written: what `kubectl logs` shows of a pod.
        pod = subprocess.run(pod_command(tiny_server.grpc_url, index, tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=120)
        assert pod.returncode == 0, pod.stdout[-2000:]
        log = tmp_path / f"pod-{index}.log"
        log.write_text(pod.stdout)
        logs.append(log)
        # The file the pod wrote and the log's last line are the same result.
        saved = RunResult.load(tmp_path / f"pod-{index}.json")
        assert RunResult.load(log).to_dict() == saved.to_dict()
        assert json.loads(pod.stdout.splitlines()[-1])["format"] == "tritonfleet.loadtest.result"

    pods = [RunResult.load(log) for log in logs]
    assert cli_main(["loadtest", "report", *map(str, logs), "--format", "json", "--max-error-rate", "0"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["merged_from"] == PODS
    assert merged["summary"]["sent"] == sum(pod.recorder.sent for pod in pods) == PODS * 20
    assert merged["summary"]["statuses"] == {"OK": PODS * 20}
    # The same merged run, gated on a limit no run can meet.
    assert cli_main(["loadtest", "report", *map(str, logs), "--max-p99-ms", "0.000001"]) == THRESHOLDS_MISSED


def test_a_log_that_does_not_end_in_a_result_is_a_clear_error(tmp_path):
    log = tmp_path / "pod-0.log"
    log.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: boom\n")
    assert cli_main(["loadtest", "report", str(log)]) == 2
