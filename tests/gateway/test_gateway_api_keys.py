"""API keys at the gateway's edge (gateway/edge/access.py), against a real Triton server.

The pod runs with Triton's restricted model-repository protocol (its admin calls need the
`tritonfleet-admin` header, which only the gateway knows) and forwards the `authorization` and
`x-tenant` headers to its models, so `echo_parameters` shows what reached it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2

from tests.gateway.helpers import GatewayProcess
from tests.gateway.polling import metric, wait_for
from tritonfleet.cli import main as cli_main
from tritonfleet.triton_server import start_fleet, stop_all

REPOSITORY = Path(__file__).resolve().parent / "access_repository"
SERVICE = "/inference.GRPCInferenceService/"
ADMIN_HEADER = ("tritonfleet-admin", secrets.token_hex(8))
# Distinct, recognisable tokens: a test looks for each of them in the gateway's log.
READER = f"reader-{secrets.token_hex(12)}"
ADMIN = f"admin-{secrets.token_hex(12)}"
LIMITED = f"limited-{secrets.token_hex(12)}"
LATE = f"late-{secrets.token_hex(12)}"
MISPLACED = f"misplaced-{secrets.token_hex(12)}"
KEYS = [
    {"name": "reader", "token_sha256": hashlib.sha256(READER.encode()).hexdigest(),
     "models": ["echo_parameters", "tiny_image"]},
    {"name": "operator", "token": ADMIN, "models": ["*"], "admin": True},
    # One token every 1000 s after a burst of two: the third request is over the rate, whatever the clock.
    {"name": "limited", "token": LIMITED, "models": ["*"], "rate_per_s": 0.001, "burst": 2},
]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def write_keys(path: Path, document) -> None:
    """Replace the file at once, as a Secret volume does: the gateway never reads half of it."""
    staged = path.with_suffix(".staged")
    staged.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    os.replace(staged, path)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("api-keys") / "keys.yaml"
    write_keys(path, {"keys": KEYS})
    return path


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    protocol = f"--grpc-restricted-protocol=model-repository:{ADMIN_HEADER[0]}={ADMIN_HEADER[1]}"
    servers = start_fleet(1, REPOSITORY, tmp_path_factory.mktemp("api-keys-pod"), extra_args=[
        protocol, "--grpc-header-forward-pattern=authorization|x-tenant",
        "--model-control-mode=explicit", "--load-model=*"])
    yield servers[0]
    stop_all(servers)


@pytest.fixture(scope="module")
def gateway(pod, keys_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("api-keys-gateway") / "gateway.log"
    env = {"TRITONFLEET_GATEWAY_API_KEYS_FILE": str(keys_file), "TRITONFLEET_GATEWAY_RELOAD_INTERVAL_S": "0.1",
           "TRITONFLEET_GATEWAY_TRITON_ADMIN_HEADER": "=".join(ADMIN_HEADER)}
    with GatewayProcess([pod.grpc_url], log, "--allow-admin", env=env,
                        ready_headers={"authorization": f"Bearer {ADMIN}"}) as process:
        yield process


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.url) as opened:
        yield opened


def infer_request(model: str) -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
    request.raw_input_contents.append(np.ones(1, dtype=np.float32).tobytes())
    return request.SerializeToString()


def call(channel, method: str, request: bytes, metadata=()) -> tuple[grpc.StatusCode, str, bytes]:
    """(status, details, reply) of one unary call."""
    try:
        reply = channel.unary_unary(SERVICE + method)(request, metadata=metadata, timeout=20)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", b""
    return grpc.StatusCode.OK, "", reply


def parameters_seen_by_the_pod(reply: bytes) -> dict:
    response = service_pb2.ModelInferResponse.FromString(reply)
    return json.loads(response.raw_output_contents[0][4:].decode())  # a BYTES element: 4-byte length first


def accesses(gateway, key: str, outcome: str) -> float:
    return metric(gateway.metrics_url, "tritonfleet_gateway_access_total", key=key, outcome=outcome)


def test_a_call_without_a_good_key_is_unauthenticated(gateway, channel):
    before = accesses(gateway, "", "unauthenticated")
    cases = [((), "needs an API key"), (bearer("not-a-key"), "unknown API key"),
             ((("authorization", f"Basic {READER}"),), "malformed authorization"),
             ((("authorization", "Bearer"),), "malformed authorization")]
    for metadata, why in cases:
        code, details, _ = call(channel, "ModelInfer", infer_request("echo_parameters"), metadata)
        assert code is grpc.StatusCode.UNAUTHENTICATED and why in details, (metadata, details)
        assert READER not in details
    # Control calls too, before any of their body is read.
    assert call(channel, "ServerMetadata", b"")[0] is grpc.StatusCode.UNAUTHENTICATED
    assert accesses(gateway, "", "unauthenticated") == before + len(cases) + 1


def test_health_needs_no_key(gateway, channel):
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_key_serves_its_models_only(gateway, channel):
    allowed, denied = accesses(gateway, "reader", "allowed"), accesses(gateway, "reader", "permission_denied")
    assert call(channel, "ModelInfer", infer_request("echo_parameters"), bearer(READER))[0] is grpc.StatusCode.OK
    code, details, _ = call(channel, "ModelInfer", infer_request("add_one"), bearer(READER))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "'reader' may not use model 'add_one'" in details
    ready = service_pb2.ModelReadyRequest(name="add_one").SerializeToString()
    assert call(channel, "ModelReady", ready, bearer(READER))[0] is grpc.StatusCode.PERMISSION_DENIED
    # The control service's per-model questions are checked by model too; asking about every model
    # at once needs a key for every model.
    for model, expected in (("add_one", grpc.StatusCode.PERMISSION_DENIED), ("echo_parameters", grpc.StatusCode.OK)):
        question = service_pb2.ModelMetadataRequest(name=model).SerializeToString()
        assert call(channel, "ModelMetadata", question, bearer(READER))[0] is expected, model
    every_model = service_pb2.ModelStatisticsRequest().SerializeToString()
    assert call(channel, "ModelStatistics", every_model, bearer(READER))[0] is grpc.StatusCode.PERMISSION_DENIED
    assert call(channel, "ModelStatistics", every_model, bearer(ADMIN))[0] is grpc.StatusCode.OK
    assert accesses(gateway, "reader", "allowed") == allowed + 2
    assert accesses(gateway, "reader", "permission_denied") == denied + 4


def stream_answers(gateway, token: str, messages: list[tuple[str, str]]) -> dict:
    """request id -> (result, error) of the messages sent on one stream with `token`."""
    client = grpcclient.InferenceServerClient(gateway.url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)),
                        headers={"authorization": f"Bearer {token}", "x-tenant": "camera-7"})
    tensor = grpcclient.InferInput("INPUT0", [1], "FP32")
    tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
    for model, request_id in messages:
        client.async_stream_infer(model, [tensor], request_id=request_id)
    client.stop_stream()  # returns once the stream has ended: every answer has arrived
    client.close()
    collected = {}
    while not answers.empty():
        result, error = answers.get()
        if error is not None:
            collected[next(rid for _, rid in messages if f"'{rid}'" in str(error))] = (None, error)
        else:
            collected[result.get_response().id] = (result, None)
    return collected


def test_a_stream_message_outside_the_key_is_refused_and_the_stream_goes_on(gateway):
    denied = accesses(gateway, "reader", "permission_denied")
    answers = stream_answers(gateway, READER, [("add_one", "refused"), ("echo_parameters", "served")])
    assert set(answers) == {"refused", "served"}
    _, error = answers["refused"]
    assert "PERMISSION_DENIED" in str(error) and "may not use model 'add_one'" in str(error)
    result, error = answers["served"]
    assert error is None
    # Triton hands forwarded headers to the model: the tenant reaches the pod, the key does not.
    seen = json.loads(result.as_numpy("PARAMETERS")[0])
    assert seen.get("x-tenant") == "camera-7" and "authorization" not in seen
    assert accesses(gateway, "reader", "permission_denied") == denied + 1


def test_the_key_never_reaches_the_pod_on_a_unary_call(gateway, channel):
    metadata = bearer(READER) + (("x-tenant", "acme"),)
    code, _, reply = call(channel, "ModelInfer", infer_request("echo_parameters"), metadata)
    assert code is grpc.StatusCode.OK
    seen = parameters_seen_by_the_pod(reply)
    assert seen.get("x-tenant") == "acme" and "authorization" not in seen


def test_over_its_rate_a_key_is_refused_while_another_is_served(gateway, channel):
    before = accesses(gateway, "limited", "rate_limited")
    codes = [call(channel, "ModelInfer", infer_request("add_one"), bearer(LIMITED))[:2] for _ in range(3)]
    assert [code for code, _ in codes[:2]] == [grpc.StatusCode.OK] * 2
    code, details = codes[2]
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "'limited' is over its rate" in details
    assert call(channel, "ModelInfer", infer_request("add_one"), bearer(ADMIN))[0] is grpc.StatusCode.OK
    # A stream message over the rate gets its error on the stream.
    [(result, error)] = stream_answers(gateway, LIMITED, [("add_one", "over")]).values()
    assert result is None and "RESOURCE_EXHAUSTED" in str(error)
    assert accesses(gateway, "limited", "rate_limited") == before + 2


def test_admin_calls_need_a_key_with_the_right(gateway, channel):
    load = service_pb2.RepositoryModelLoadRequest(model_name="add_one").SerializeToString()
    before = accesses(gateway, "reader", "permission_denied")
    code, details, _ = call(channel, "RepositoryModelLoad", load, bearer(READER))
    assert code is grpc.StatusCode.PERMISSION_DENIED and "needs admin: true" in details
    assert accesses(gateway, "reader", "permission_denied") == before + 1
    log_settings = service_pb2.LogSettingsRequest().SerializeToString()
    assert call(channel, "LogSettings", log_settings, bearer(READER))[0] is grpc.StatusCode.PERMISSION_DENIED
    assert call(channel, "LogSettings", log_settings, bearer(ADMIN))[0] is grpc.StatusCode.OK


def test_the_gateway_sends_the_pods_admin_header_and_a_client_cannot(gateway, channel, pod):
    load = service_pb2.RepositoryModelLoadRequest(model_name="add_one").SerializeToString()
    # Triton refuses the restricted protocol without the header, and a client's own try at it is not
    # passed on.
    with grpc.insecure_channel(pod.grpc_url) as direct:
        code, details, _ = call(direct, "RepositoryModelLoad", load)
        assert code is not grpc.StatusCode.OK and ADMIN_HEADER[0] in details, details
    spoofed = bearer(READER) + ((f"triton-grpc-protocol-{ADMIN_HEADER[0]}", ADMIN_HEADER[1]),)
    guess = ((f"triton-grpc-protocol-{ADMIN_HEADER[0]}", "guess"),)
    assert call(channel, "RepositoryIndex", b"", guess + bearer(READER))[0] is grpc.StatusCode.OK
    assert call(channel, "RepositoryModelLoad", load, spoofed)[0] is grpc.StatusCode.PERMISSION_DENIED
    # Through the gateway, an admin key's load reaches the pod with the header and succeeds.
    code, details, _ = call(channel, "RepositoryModelLoad", load, bearer(ADMIN))
    assert code is grpc.StatusCode.OK, details
    assert call(channel, "ModelInfer", infer_request("add_one"), bearer(ADMIN))[0] is grpc.StatusCode.OK


def test_the_keys_file_is_reloaded_and_a_broken_one_keeps_the_keys(gateway, channel, keys_file):
    request = infer_request("echo_parameters")
    assert call(channel, "ModelInfer", request, bearer(LATE))[0] is grpc.StatusCode.UNAUTHENTICATED
    late = {"name": "late", "token": LATE, "models": ["echo_parameters"]}
    write_keys(keys_file, {"keys": [*KEYS, late]})
    assert wait_for(lambda: call(channel, "ModelInfer", request, bearer(LATE))[0] is grpc.StatusCode.OK)
    failed = metric(gateway.metrics_url, "tritonfleet_gateway_api_keys_reloads_total", outcome="failed")
    # A plaintext token put where its digest goes: refused, and never echoed in the log.
    broken = {"keys": [*KEYS, {"name": "oops", "token_sha256": MISPLACED, "models": ["*"]}]}
    write_keys(keys_file, broken)
    assert wait_for(lambda: metric(gateway.metrics_url, "tritonfleet_gateway_api_keys_reloads_total",
                                   outcome="failed") == failed + 1)
    for token in (READER, LATE):
        assert call(channel, "ModelInfer", request, bearer(token))[0] is grpc.StatusCode.OK
    assert "keys[3] (oops): `token_sha256` must be 64 hex digits" in gateway.log_path.read_text()
    write_keys(keys_file, {"keys": KEYS})
    assert wait_for(lambda: call(channel, "ModelInfer", request, bearer(LATE))[0] is grpc.StatusCode.UNAUTHENTICATED)


def test_loadtest_sends_the_key_from_a_file_and_never_shows_it(gateway, tmp_path, capsys):
    key_file = tmp_path / "api-key"
    key_file.write_text(READER + "\n")
    output = tmp_path / "run.json"
    allowed = accesses(gateway, "reader", "allowed")
    assert cli_main(["loadtest", "image", "--url", gateway.url, "--model", "tiny_image", "--warmup", "0", "--quiet",
                     "--duration", "1", "--rate", "10", "--workers", "1", "--api-key-file", str(key_file),
                     "-o", str(output), "--print-result"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out.splitlines()[-1])["summary"]["errors"] == 0
    assert accesses(gateway, "reader", "allowed") == allowed + 10
    assert READER not in output.read_text() + printed.out + printed.err


def test_no_token_in_the_gateway_log(gateway):
    text = gateway.log_path.read_text()
    assert "API keys reloaded" in text  # the log has seen the keys change
    for token in (READER, ADMIN, LIMITED, LATE, MISPLACED, ADMIN_HEADER[1]):
        assert token not in text


@pytest.mark.parametrize("entry, message", [
    ({"token": "t", "models": ["*"]}, r"keys\[0\]: needs a non-empty `name`"),
    ({"name": "a", "models": ["*"]}, r"keys\[0\] \(a\): needs exactly one of `token` and `token_sha256`"),
    ({"name": "a", "token": "t", "token_sha256": "0" * 64, "models": ["*"]}, "exactly one of"),
    ({"name": "a", "token_sha256": MISPLACED, "models": ["*"]}, "must be 64 hex digits"),
    ({"name": "a", "token": "t"}, "`models` must be a non-empty list"),
    ({"name": "a", "token": "t", "models": ["*"], "rate_per_s": -1}, "`rate_per_s` must be a number, 0 or more"),
    ({"name": "a", "token": "t", "models": ["*"], "burst": 0.5}, "`burst` must be at least 1"),
    ({"name": "a", "token": "t", "models": ["*"], "admin": "yes"}, "`admin` must be true or false"),
    ({"name": "a", "token": "t", "models": ["*"], "modles": ["x"]}, r"unknown fields \['modles'\]"),
])
def test_a_bad_keys_entry_is_named_and_its_token_never_shown(entry, message):
    from gateway.edge.access import KeysFileError, parse_keys

    with pytest.raises(KeysFileError, match=message) as refused:
        parse_keys({"keys": [entry]})
    assert MISPLACED not in str(refused.value)


def test_two_keys_with_one_name_or_one_token_are_refused():
    from gateway.edge.access import KeysFileError, parse_keys

    with pytest.raises(KeysFileError, match=r"keys\[1\] \(a\): the name is used"):
        parse_keys({"keys": [{"name": "a", "token": "t", "models": ["*"]},
                             {"name": "a", "token": "u", "models": ["*"]}]})
    with pytest.raises(KeysFileError, match=r"keys\[1\] \(b\): same token as key 'a'"):
        parse_keys({"keys": [{"name": "a", "token": "t", "models": ["*"]},
                             {"name": "b", "token_sha256": hashlib.sha256(b"t").hexdigest(), "models": ["*"]}]})


def test_the_gateway_does_not_start_on_a_keys_file_that_does_not_load(tmp_path, monkeypatch, capsys):
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - name: a\n    token: [unclosed\n")
    monkeypatch.setenv("TRITONFLEET_GATEWAY_API_KEYS_FILE", str(path))
    assert cli_main(["gateway", "--backend", "127.0.0.1:1"]) == 2
    assert "is not valid YAML at line" in capsys.readouterr().err
