"""`-H key:value` metadata and `--connections N`, seen from the server side of real gRPC connections.

The load generator talks to a recording proxy (a real gRPC server that forwards every call to a real
Triton server), which notes each call's metadata and the TCP connection it came on; with the real
gateway between them, the proxy is the gateway's backend and sees what the gateway passed on.
"""

from __future__ import annotations

import json

import pytest

from loadtest.channels import parse_header
from loadtest.payloads import TensorSpec
from loadtest.results import RunResult, summarize
from loadtest.runs import VideoOptions, run_video
from tests.loadtest.recording_proxy import RecordingProxy
from tritonfleet.cli import main as cli_main
from tritonfleet.proxies import GatewayProcess

TOKEN = "Bearer s3cr3t-token"


@pytest.fixture
def proxy(tiny_server):
    with RecordingProxy(tiny_server.grpc_url) as recording:
        yield recording


def image_cli(url: str, output, *extra: str) -> int:
    return cli_main(["loadtest", "image", "--url", url, "--model", "tiny_image", "--warmup", "0", "--quiet",
                     "--duration", "1", "-o", str(output), *extra])


def test_metadata_arrives_with_every_unary_call_and_only_its_names_are_saved(proxy, tmp_path):
    output = tmp_path / "run.json"
    assert image_cli(proxy.url, output, "--rate", "20", "--workers", "1", "-H", "x-tenant:team-a",
                     "-H", f"Authorization: {TOKEN}") == 0
    calls = proxy.recorded("ModelInfer")
    assert len(calls) == 20
    assert {call.metadata for call in calls} == {(("x-tenant", "team-a"), ("authorization", TOKEN))}
    result = RunResult.load(output)
    assert result.config.metadata_keys == ("x-tenant", "authorization")
    assert TOKEN not in output.read_text()


@pytest.mark.parametrize("mode, method", [("stream", "ModelStreamInfer"), ("unary", "ModelInfer")])
def test_metadata_arrives_on_camera_streams(proxy, mode, method):
    result = run_video(VideoOptions(url=proxy.url, tensor=TensorSpec("tiny_stream", "FRAME"), streams=2, fps=10,
                                    duration_s=1, warmup_s=0, mode=mode, workers=1, quiet=True,
                                    metadata=(("x-camera-site", "dock-7"),)))
    assert summarize(result)["errors"] == 0
    calls = proxy.recorded(method)
    # One stream call per camera, or one unary call per answered frame.
    assert len(calls) == (2 if mode == "stream" else summarize(result)["ok"])
    assert {call.metadata for call in calls} == {(("x-camera-site", "dock-7"),)}


def test_the_gateway_passes_the_metadata_on_to_the_pod(proxy, tmp_path):
    with GatewayProcess([proxy.url], tmp_path / "gateway.log") as gateway:
        assert image_cli(gateway.url, tmp_path / "run.json", "--rate", "10", "--workers", "1",
                         "-H", "x-tenant:team-a", "-H", f"authorization:{TOKEN}") == 0
        run_video(VideoOptions(url=gateway.url, tensor=TensorSpec("tiny_stream", "FRAME"), streams=1, fps=10,
                               duration_s=1, warmup_s=0, workers=1, quiet=True, metadata=(("x-tenant", "team-b"),)))
    unary = proxy.recorded("ModelInfer")
    assert len(unary) == 10
    for call in unary:
        assert ("x-tenant", "team-a") in call.metadata and ("authorization", TOKEN) in call.metadata
    [stream] = proxy.recorded("ModelStreamInfer")
    assert ("x-tenant", "team-b") in stream.metadata


@pytest.mark.parametrize("workers, connections", [(1, 1), (1, 3), (2, 2)])
def test_each_worker_opens_its_connections_and_uses_every_one(proxy, tmp_path, workers, connections):
    assert image_cli(proxy.url, tmp_path / "run.json", "--concurrency", "4", "--workers", str(workers),
                     "--connections", str(connections)) == 0
    peers = {call.peer for call in proxy.recorded("ModelInfer")}
    assert len(peers) == workers * connections
    assert RunResult.load(tmp_path / "run.json").config.connections == connections


def test_camera_streams_spread_over_the_connections(proxy):
    run_video(VideoOptions(url=proxy.url, tensor=TensorSpec("tiny_stream", "FRAME"), streams=4, fps=10,
                           duration_s=1, warmup_s=0, workers=1, connections=2, quiet=True))
    calls = proxy.recorded("ModelStreamInfer")
    assert len(calls) == 4 and len({call.peer for call in calls}) == 2


@pytest.mark.parametrize("header, message", [
    ("no-colon", "is not key:value"),
    (":value", "is not key:value"),
    ("grpc-timeout:1S", "reserved by gRPC"),
    ("x-trace-bin:AAAA", "binary (-bin) metadata"),
    ("bad key:1", "may hold only"),
    ("x-ok:caf\u00e9", "printable ASCII"),
])
def test_bad_metadata_is_refused_before_any_load(header, message, capsys):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_header(header)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["loadtest", "image", "--url", "127.0.0.1:1", "-H", header])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_zero_connections_is_a_clear_error(tmp_path, capsys):
    assert image_cli("127.0.0.1:1", tmp_path / "run.json", "--connections", "0") == 2
    assert "--connections must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "run.json").exists()


def test_header_keys_are_lower_case_as_grpc_sends_them():
    assert parse_header("X-Tenant: team-a") == ("x-tenant", "team-a")
    assert json.dumps(parse_header("k:v:w")) == '["k", "v:w"]'
