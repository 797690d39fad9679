"""The Triton launcher against real tritonserver processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from kernels.preprocess import preprocess_reference
from tritonfleet import triton_metrics
from tritonfleet.paths import MODEL_REPOSITORY, REPO_ROOT
from tritonfleet.processes import command_lines_containing
from tritonfleet.triton_install import TritonInstall
from tritonfleet.triton_server import (
    ModelLoadError,
    START_ATTEMPTS,
    PortInUseError,
    ServerPorts,
    TritonServer,
    TritonServerError,
    parse_model_load_failure,
    start_fleet,
    stop_all,
)
from tests.polling import poll

pytestmark = pytest.mark.slow

# The launcher's own behaviour (processes started and stopped) needs a server, not the project's
# models: the gateway tests' small numpy-only repository starts in a fraction of the time.
SMALL_REPOSITORY = REPO_ROOT / "tests/gateway/model_repository"


def infer_preprocess(url: str, frames: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("FRAMES", list(frames.shape), "UINT8")
    tensor.set_data_from_numpy(frames)
    return client.infer("image_preprocess", [tensor]).as_numpy("PIXELS")


def test_two_servers_start_with_the_model_ready_on_both(shared_fleet):
    assert len(shared_fleet) == 2
    assert len({s.ports.grpc for s in shared_fleet}) == 2
    for server in shared_fleet:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_server_ready()
        assert client.is_model_ready("image_preprocess")


def test_grpc_inference_returns_the_reference_values(shared_fleet):
    frames = np.random.default_rng(7).integers(0, 256, size=(2, 37, 53, 3), dtype=np.uint8)
    expected = preprocess_reference(torch.from_numpy(frames), (224, 224)).numpy()
    for server in shared_fleet:
        got = infer_preprocess(server.grpc_url, frames)
        assert got.shape == (2, 3, 224, 224)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_metrics_counters_move_with_traffic(shared_fleet):
    server = shared_fleet[0]
    text = triton_metrics.scrape(server.metrics_url)
    assert "nv_inference_request_success" in text and "nv_inference_count" in text
    before = triton_metrics.successes(server.metrics_url, "image_preprocess")
    frames = np.zeros((1, 8, 8, 3), dtype=np.uint8) + 9
    for _ in range(3):
        infer_preprocess(server.grpc_url, frames)
    # Triton refreshes its metrics on an interval (2 s by default): wait for the counter to catch up,
    # then check it counted exactly these three.
    def moved() -> float:
        return triton_metrics.successes(server.metrics_url, "image_preprocess") - before

    assert poll(lambda: moved() >= 3, timeout=30), moved()
    assert moved() == 3


def test_a_bad_request_gets_invalid_argument_and_the_server_keeps_serving(shared_fleet):
    server = shared_fleet[1]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("FRAMES", [1, 0, 4, 3], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 0, 4, 3), dtype=np.uint8))
    with pytest.raises(InferenceServerException, match="must not be empty") as refused:
        client.infer("image_preprocess", [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value
    assert infer_preprocess(server.grpc_url, np.ones((1, 4, 4, 3), dtype=np.uint8)).shape == (1, 3, 224, 224)


def write_broken_repository(root):
    broken = root / "broken_model"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        textwrap.dedent(
            """
            name: "broken_model"
            backend: "python"
            max_batch_size: 4
            input [ { name: "X" data_type: TYPE_NOT_A_TYPE dims: [ 3 ] } ]
            output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]
            """
        )
    )
    (broken / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    return root


def test_a_broken_model_config_names_the_model_and_the_reason(tmp_path, triton_fleet):
    repo = write_broken_repository(tmp_path / "repo")
    with pytest.raises(ModelLoadError) as failure:
        triton_fleet(1, repo=repo)
    assert failure.value.model == "broken_model"
    assert "TYPE_NOT_A_TYPE" in str(failure.value) or "data_type" in str(failure.value)


def test_parse_model_load_failure_reads_tritons_log_line():
    line = (
        "E1125 16:00:00.000 1 model_lifecycle.cc:654] failed to load 'resnet' version 1: "
        "Invalid argument: unexpected inference output 'PROB'"
    )
    assert parse_model_load_failure(line) == ("resnet", "Invalid argument: unexpected inference output 'PROB'")
    assert parse_model_load_failure("I1125 all good") is None


def test_parse_model_load_failure_reads_a_config_that_does_not_parse():
    log = (
        '[libprotobuf ERROR text_format.cc:337] Error parsing text-format inference.ModelConfig: '
        '5:48: Unknown enumeration value of "TYPE_X" for field "data_type".\n'
        'E1125 model_repository_manager.cc:1460] "Poll failed for model directory \'m\': '
        'failed to read text proto from /r/m/config.pbtxt"\n'
    )
    model, reason = parse_model_load_failure(log)
    assert model == "m"
    assert reason.startswith("failed to read text proto from /r/m/config.pbtxt: 5:48: Unknown enumeration")


def abort_starts(monkeypatch, count: int | None) -> list[int]:
    """TritonServer.start made to SIGABRT the first `count` servers it starts (None: every one), as
    Triton 2.51 sometimes aborts while it starts; returns the pids of every start."""
    started = []
    real_start = TritonServer.start

    def start_then_abort(server):
        real_start(server)
        started.append(server.process.pid)
        if count is None or len(started) <= count:
            os.kill(server.process.pid, signal.SIGABRT)

    monkeypatch.setattr(TritonServer, "start", start_then_abort)
    return started


def test_a_server_that_aborts_while_it_restarts_is_started_once_more(tmp_path, monkeypatch):
    """The first start of the restart is aborted (SIGABRT, as Triton's own abort ends it); the second
    comes up ready on the same ports."""
    [server] = start_fleet(1, SMALL_REPOSITORY, tmp_path)
    started = abort_starts(monkeypatch, 1)
    try:
        server.restart()
        assert 2 <= len(started) <= START_ATTEMPTS and server.is_ready()
    finally:
        stop_all([server])


@pytest.mark.parametrize("aborts", [1, 2], ids=["the first start", "the restart too"])
def test_a_server_that_aborts_while_it_starts_is_started_again(tmp_path, monkeypatch, aborts):
    """A crash while starting can meet another on the restart: the server is started again, within
    START_ATTEMPTS starts (one of its own may crash too, which is what the spare starts are for)."""
    started = abort_starts(monkeypatch, aborts)
    servers = start_fleet(1, SMALL_REPOSITORY, tmp_path)
    try:
        assert aborts + 1 <= len(started) <= START_ATTEMPTS and servers[0].is_ready()
    finally:
        stop_all(servers)


def test_a_server_that_crashes_on_every_start_gives_up_after_the_last(tmp_path, monkeypatch):
    started = abort_starts(monkeypatch, None)
    with pytest.raises(TritonServerError, match="exited with code -6"):
        start_fleet(1, SMALL_REPOSITORY, tmp_path)
    assert len(started) == START_ATTEMPTS


def test_a_port_in_use_gives_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = ServerPorts.pick()
        ports.grpc = taken.getsockname()[1]
        server = TritonServer(MODEL_REPOSITORY, tmp_path, ports=ports)
        with pytest.raises(PortInUseError, match=f"port {ports.grpc}"):
            server.start()
        assert server.process is None


def test_backend_directory_holds_the_stub_for_this_python(tmp_path):
    install = TritonInstall.locate()
    backend = install.prepare_backend_dir(tmp_path)
    names = sorted(p.name for p in (backend / "python").iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    stub = backend / "python" / "triton_python_backend_stub"
    assert stub.read_bytes() == install.stub_for(sys.version_info[:2]).read_bytes()


def processes_mentioning(text: str) -> list[str]:
    return command_lines_containing(text)


def start_servers_cli(workdir, count: int = 1) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "tritonfleet.cli", "servers", "-n", str(count), "--workdir", str(workdir),
         "--model-repository", str(SMALL_REPOSITORY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if "Ctrl-C stops them" in line:
            return process
    raise AssertionError(f"tritonfleet servers exited early with {process.wait()}")


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9 of the launcher"])
def test_no_server_outlives_the_launcher(tmp_path, how, triton_runs_here):
    workdir = tmp_path / "servers"
    launcher = start_servers_cli(workdir)
    assert processes_mentioning(str(workdir)), "the launched server should be running"
    if how == "ctrl-c":
        launcher.send_signal(2)
        assert launcher.wait(timeout=60) == 0
    else:
        launcher.kill()
        launcher.wait(timeout=10)
    assert poll(lambda: not processes_mentioning(str(workdir)), timeout=30), processes_mentioning(str(workdir))


def test_a_failing_test_leaves_no_server_behind(tmp_path):
    test_file = tmp_path / "test_fails_with_a_server.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
            from conftest import triton_fleet  # noqa: F401  (the fixture under test)

            def test_fails(triton_fleet):
                servers = triton_fleet(1, repo=Path({str(SMALL_REPOSITORY)!r}))
                assert servers[0].is_ready()
                raise AssertionError("this test fails on purpose")
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file),
         f"--basetemp={tmp_path / 'inner'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=240,
    )
    assert "1 failed" in run.stdout, run.stdout[-2000:]
    assert "this test fails on purpose" in run.stdout
    assert not processes_mentioning(str(tmp_path / "inner")), "a server outlived the failed test"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as refused:
        return refused.code


def test_http_readiness_endpoint_agrees_with_grpc(shared_fleet):
    server = shared_fleet[0]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    base = f"http://{server.http_url}/v2"
    answers = {
        "server": (http_status(f"{base}/health/ready"), client.is_server_ready()),
        "a loaded model": (http_status(f"{base}/models/image_preprocess/ready"), client.is_model_ready("image_preprocess")),
        "an unknown model": (http_status(f"{base}/models/no_such_model/ready"), client.is_model_ready("no_such_model")),
    }
    client.close()
    # HTTP says 200 exactly where gRPC says ready.
    assert {what: (status == 200, ready) for what, (status, ready) in answers.items()} == {
        "server": (True, True), "a loaded model": (True, True), "an unknown model": (False, False)}, answers
