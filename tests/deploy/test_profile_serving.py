"""A profile's queue limit and warmup, served by a real Triton 2.51: once `max_queue_size` requests
wait, the next one is refused at once with a clear status instead of queueing without bound; and a
server with a warmup turns ready only after the warmup request has run."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from google.protobuf import text_format

from models.profiles import ModelProfile, ProfileError, apply_profile, load_profile, read_config
from tritonfleet.paths import REPO_ROOT
from tritonfleet.triton_server import TritonServer, start_fleet
from tests.polling import wait_until

GATED = Path(__file__).parent / "model_repository" / "gated"


def pending(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith('nv_inference_pending_request_count{model="gated"'):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def gated_repository(tmp_path, entry: ModelProfile):
    repo, gate = tmp_path / "models", tmp_path / "gate"
    gate.mkdir()
    shutil.copytree(GATED, repo / "gated")
    config = apply_profile(read_config(GATED / "config.pbtxt"), entry)
    config.parameters["gate_dir"].string_value = str(gate)
    (repo / "gated" / "config.pbtxt").write_text(text_format.MessageToString(config))
    return repo, gate


@pytest.fixture
def gated_server(tmp_path):
    repo, gate = gated_repository(tmp_path, ModelProfile(max_batch_size=1, max_queue_size=1))
    servers = start_fleet(1, repo, tmp_path / "run")
    try:
        yield servers[0], gate
    finally:
        (gate / "open").touch()
        servers[0].stop()


def request(value: int) -> list:
    tensor = grpcclient.InferInput("X", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32))
    return [tensor]


@pytest.mark.slow
def test_a_full_queue_refuses_the_next_request_at_once(gated_server):
    server, gate = gated_server
    client = grpcclient.InferenceServerClient(server.grpc_url)
    answers = {}
    client.async_infer("gated", request(1), callback=lambda result, error: answers.setdefault(1, (result, error)))
    wait_until(lambda: (gate / "started-1").exists(), "request 1 to be executing")
    client.async_infer("gated", request(2), callback=lambda result, error: answers.setdefault(2, (result, error)))
    wait_until(lambda: pending(server.metrics_url) == 1, "request 2 to wait in the queue")

    with pytest.raises(InferenceServerException) as refused:
        client.infer("gated", request(3), client_timeout=30)
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert "Exceeds maximum queue size" in refused.value.message()

    (gate / "open").touch()
    wait_until(lambda: len(answers) == 2, "the queued requests to be answered")
    for value in (1, 2):
        result, error = answers[value]
        assert error is None and result.as_numpy("Y")[0, 0] == value
    client.close()


@pytest.mark.slow
def test_a_server_with_a_warmup_is_ready_only_after_the_warmup_ran(tmp_path):
    repo, gate = gated_repository(tmp_path, ModelProfile(max_batch_size=1, warmup=(("X", (1,)),)))
    (tmp_path / "run").mkdir()
    server = TritonServer(model_repository=repo, workdir=tmp_path / "run")
    server.start()
    try:
        # The zero-filled warmup request (X = 0) runs before the model is READY, and holds it.
        wait_until(lambda: (gate / "started-0").exists(), "the warmup request to run")
        assert server.is_running() and not server.is_ready()
        (gate / "open").touch()
        server.wait_ready(120)
    finally:
        (gate / "open").touch()
        server.stop()


def test_the_gpu_profile_warms_up_and_bounds_the_image_models_queues():
    gpu = load_profile("gpu")
    for model in ("image_preprocess", "image_classifier", "image_postprocess"):
        assert gpu[model].warmup and gpu[model].max_queue_size, model


def test_queue_and_warmup_settings_render_into_the_dynamic_batcher():
    config = apply_profile(read_config(REPO_ROOT / "model_repository/image_classifier/config.pbtxt"),
                           ModelProfile(max_batch_size=8, max_queue_size=64, queue_timeout_us=500_000,
                                        warmup=(("PIXELS", (3, 224, 224)),)))
    policy = config.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (64, 500_000)
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 1 and list(warmup.inputs["PIXELS"].dims) == [3, 224, 224]
    assert warmup.inputs["PIXELS"].zero_data


@pytest.mark.parametrize("entry, message", [
    (ModelProfile(max_batch_size=8, max_queue_size=4), "need the dynamic batcher"),
    (ModelProfile(max_batch_size=8, warmup=(("NOPE", (1,)),)), "does not have"),
])
def test_settings_a_model_cannot_take_are_refused(entry, message):
    model = "video_pipeline" if entry.max_queue_size else "image_classifier"
    with pytest.raises(ProfileError, match=message):
        apply_profile(read_config(REPO_ROOT / f"model_repository/{model}/config.pbtxt"), entry)
