"""The local stack's supervisor with real processes: Triton, a command service, Prometheus."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

import pytest

from tritonfleet.paths import DEFAULT_STACK, REPO_ROOT
from tritonfleet.processes import command_lines_containing
from tritonfleet.stack import Stack, StackError
from tritonfleet.stack_config import load_stack_config, parse_stack_config
from tests.polling import poll

pytestmark = pytest.mark.slow


def prometheus_query(address: str, query: str) -> list[dict]:
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)["data"]["result"]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One Triton server, a plain HTTP server as a `command` service, and Prometheus when installed."""
    config = parse_stack_config(
        {
            "services": [
                {"name": "triton", "kind": "triton", "replicas": 1, "model_repository": "model_repository"},
                {
                    "name": "web",
                    "kind": "command",
                    "argv": [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port.http}"],
                    "ports": ["http"],
                },
                {"name": "prometheus", "kind": "prometheus", "optional": True, "scrape_interval": "1s"},
            ]
        },
        REPO_ROOT,
    )
    with Stack(config, tmp_path_factory.mktemp("stack")) as running:
        yield running


def test_services_start_in_order_and_publish_their_addresses(stack):
    values = stack.placeholders()
    assert values["triton.grpc"] == stack.triton_servers()[0].grpc_url
    with urllib.request.urlopen(f"http://{values['web.http']}/", timeout=5) as reply:
        assert reply.status == 200


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus is not installed (make system)")
def test_prometheus_scrapes_the_triton_servers(stack):
    address = stack.placeholders()["prometheus.http"]
    up = poll(lambda: prometheus_query(address, 'up{job="triton"} == 1'), timeout=30)
    assert len(up) == 1
    series = poll(lambda: prometheus_query(address, "nv_inference_request_success"), timeout=30)
    assert {s["metric"]["model"] for s in series} >= {"image_preprocess"}


def test_a_dead_process_is_restarted_on_the_same_port(stack):
    web = stack.service("web").processes[0]
    address = stack.placeholders()["web.http"]
    web.process.kill()
    web.process.wait()
    stop = threading.Event()
    watcher = threading.Thread(target=stack.watch, args=(stop, 0.2))
    watcher.start()
    try:
        # Running is not yet listening: the restarted server is asked until it answers.
        assert poll(lambda: web.is_running() and answers(f"http://{address}/"), timeout=30)
    finally:
        stop.set()
        watcher.join()
    assert stack.service("web").restarts == 1


def test_a_failing_service_stops_the_ones_started_before_it(tmp_path):
    config = parse_stack_config(
        {
            "services": [
                {"name": "web", "kind": "command", "ports": ["http"],
                 "argv": [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port.http}"]},
                {"name": "crash", "kind": "command", "argv": [sys.executable, "-c", "raise SystemExit(3)"]},
            ]
        },
        REPO_ROOT,
    )
    stack = Stack(config, tmp_path)
    with pytest.raises(StackError, match="crash exited with code 3"):
        stack.start()
    assert stack.services == []
    assert not [line for line in command_lines_containing(str(tmp_path)) if "http.server" in line]


def test_an_unknown_placeholder_is_named(tmp_path):
    config = parse_stack_config(
        {"services": [{"name": "c", "kind": "command", "argv": [sys.executable, "{nothing.here}"]}]}, REPO_ROOT
    )
    with pytest.raises(StackError, match=r"c: needs \{nothing.here\}, which no started service publishes"):
        Stack(config, tmp_path).start()


def test_an_optional_service_whose_inputs_are_missing_is_skipped_with_the_reason(tmp_path):
    config = parse_stack_config(
        {"services": [{"name": "c", "kind": "command", "optional": True, "argv": [sys.executable, "{nothing.here}"]}]},
        REPO_ROOT,
    )
    with Stack(config, tmp_path) as stack:
        assert stack.services == []
        assert "{nothing.here}" in stack.skipped["c"]


def test_up_runs_until_ctrl_c_and_stops_everything(tmp_path, triton_runs_here):
    workdir = tmp_path / "up"
    up = subprocess.Popen(
        [sys.executable, "-m", "tritonfleet.cli", "up", "--stack", str(DEFAULT_STACK), "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
    )
    lines = []
    for line in up.stdout:
        lines.append(line)
        if "The stack is up" in line:
            break
    assert any(line.startswith("triton.grpc") for line in lines), "".join(lines)
    assert load_stack_config(DEFAULT_STACK).service("triton").replicas == len(
        next(line for line in lines if line.startswith("triton.grpc")).split()[1].split(",")
    )
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=90) == 0
    leftover = command_lines_containing(str(workdir))
    assert not leftover, leftover
