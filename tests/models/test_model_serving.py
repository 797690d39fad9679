"""The six models on a real tritonserver (CPU): loading, the image pipeline against the torch
reference, batching, per-request errors. The video models are in test_model_video.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tests.models.model_inputs import encode, frame_input, image_input, synthetic_image
from skimage import data
from tritonclient.utils import InferenceServerException

from kernels.postprocess import softmax_topk_reference
from kernels.preprocess import preprocess_reference
from models.classifier import Classifier, ClassifierSettings
from models.decode import decode_cpu
from tests.polling import wait_until

MODELS = ["image_preprocess", "image_classifier", "image_postprocess", "image_pipeline", "video_pipeline", "video_events"]


@pytest.fixture(scope="module")
def reference_classifier():
    # The served models use the same seed and have no weights file in the repository.
    return Classifier(ClassifierSettings(weights=None, seed=0))


def reference_top5(classifier, encoded: list[bytes]):
    pixels = torch.cat([preprocess_reference(decode_cpu(b)[None], (224, 224)) for b in encoded])
    logits = classifier(pixels)
    scores, indices = softmax_topk_reference(logits, 5)
    return torch.softmax(logits, dim=-1), scores.numpy(), indices.numpy()


GOOD = [encode(data.astronaut()), encode(data.chelsea())]


@pytest.fixture(scope="module")
def good_reference_ids(reference_classifier):
    return reference_top5(reference_classifier, GOOD)[2]


def test_every_model_is_ready(client):
    assert {name: client.is_model_ready(name) for name in MODELS} == {name: True for name in MODELS}


def test_pipeline_top5_equals_torch_reference(client, reference_classifier):
    photos = [data.astronaut(), data.chelsea(), data.coffee()]
    encoded = [encode(p) for p in photos] + [encode(data.rocket(), "PNG")]
    encoded += [encode(synthetic_image(480, 640, seed=1)), encode(synthetic_image(1080, 1920, seed=2))]
    result = client.infer("image_pipeline", [image_input(encoded)])
    ids, scores, labels = result.as_numpy("CLASS_IDS"), result.as_numpy("SCORES"), result.as_numpy("LABELS")

    probs, ref_scores, ref_ids = reference_top5(reference_classifier, encoded)
    assert ids.shape == (len(encoded), 5)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-7)
    # Same classes in the same order; where two reference probabilities tie to float rounding the
    # order may differ, so each served class must carry the probability the reference gives it.
    served_probs = np.take_along_axis(probs.numpy(), ids, axis=1)
    np.testing.assert_allclose(served_probs, ref_scores, rtol=1e-4, atol=1e-7)
    assert (ids == ref_ids).mean() > 0.9
    assert len({tuple(row) for row in ids.tolist()}) == len(encoded), "images must not share a top-5"
    assert labels[0, 0].decode() == f"class_{ids[0, 0]:04d}"


def test_preprocess_takes_frames_and_encoded_images_alike(client):
    photo = data.coffee()
    from_png = client.infer("image_preprocess", [image_input([encode(photo, "PNG")])]).as_numpy("PIXELS")
    from_frames = client.infer("image_preprocess", [frame_input("FRAMES", photo[None])]).as_numpy("PIXELS")
    expected = preprocess_reference(torch.from_numpy(photo)[None], (224, 224)).numpy()
    assert from_png.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(from_png, expected, atol=1e-5)
    np.testing.assert_allclose(from_frames, expected, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (b"", "empty image"),
        (b"GIF89a not a jpeg", "not a JPEG or PNG"),
        (encode(data.chelsea())[:2000], "corrupt JPEG"),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg"],
)
def test_bad_image_fails_alone_in_its_batch(client, good_reference_ids, bad, message):
    good = GOOD
    outcomes = {}

    def done(key):
        return lambda result, error: outcomes.__setitem__(key, (result, error))

    # Sent together, so the dynamic batcher can put them in one execution.
    client.async_infer("image_pipeline", [image_input([good[0]])], done("good0"))
    client.async_infer("image_pipeline", [image_input([bad])], done("bad"))
    client.async_infer("image_pipeline", [image_input([good[1]])], done("good1"))
    wait_until(lambda: len(outcomes) == 3, "every answer", timeout=120)

    result, error = outcomes["bad"]
    assert result is None and message in error.message()
    assert "INVALID_ARG" in str(error.status())
    for index, key in enumerate(["good0", "good1"]):
        result, error = outcomes[key]
        assert error is None
        assert result.as_numpy("CLASS_IDS")[0, 0] == good_reference_ids[index, 0]


@pytest.mark.parametrize(
    "inputs, message",
    [
        (lambda: [], "request has 0 inputs"),  # Triton itself refuses it
        (lambda: [image_input([encode(data.coffee())]), frame_input("FRAMES", data.coffee()[None])], "exactly one"),
        (lambda: [frame_input("FRAMES", np.zeros((1, 0, 8, 3), np.uint8))], "must not be empty"),
    ],
    ids=["neither", "both", "empty-frames"],
)
def test_preprocess_rejects_malformed_requests(client, inputs, message):
    with pytest.raises(InferenceServerException, match=message):
        client.infer("image_preprocess", inputs())


def test_wrong_shape_is_rejected_with_a_clear_error(client):
    wrong = grpcclient.InferInput("PIXELS", [1, 3, 100, 100], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 100, 100), np.float32))
    with pytest.raises(InferenceServerException, match=r"unexpected shape"):
        client.infer("image_classifier", [wrong])


def test_dynamic_batching_runs_fewer_executions_than_requests(client):
    before = classifier_stats(client)
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    outcomes = []
    requests = 12
    for _ in range(requests):
        tensor = grpcclient.InferInput("PIXELS", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        client.async_infer("image_classifier", [tensor], lambda result, error: outcomes.append(error))
    wait_until(lambda: len(outcomes) == requests, "every answer", timeout=120)
    after = classifier_stats(client)

    assert outcomes == [None] * requests
    assert after["inference_count"] - before["inference_count"] == requests
    assert after["execution_count"] - before["execution_count"] < requests


def classifier_stats(client) -> dict[str, int]:
    stats = client.get_inference_statistics("image_classifier", as_json=True)["model_stats"][0]
    return {key: int(stats.get(key, 0)) for key in ("inference_count", "execution_count")}

