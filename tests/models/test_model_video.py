"""The stateful video models on a real tritonserver: per-stream state under the sequence batcher,
and scene-change events over a bidirectional gRPC stream (decoupled responses, then the final flag)."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
import torch
from tritonclient.utils import InferenceServerException

from models.classifier import Classifier, ClassifierSettings
from models.pipeline import ImagePipeline
from tests.models.model_inputs import frame_input, synthetic_image


def stream_frames(seed: int, height: int, width: int, count: int, step: int) -> list[np.ndarray]:
    """A camera that pans `step` pixels a frame over one synthetic scene: steady, known motion."""
    scene = synthetic_image(height, width + step * count, seed=seed)
    return [np.ascontiguousarray(scene[:, i * step : i * step + width]) for i in range(count)]


def send_stream(client, stream_id: int, frames: list[np.ndarray]) -> list[dict]:
    outputs = []
    for index, frame in enumerate(frames):
        result = client.infer(
            "video_pipeline",
            [frame_input("FRAME", frame[None])],
            sequence_id=stream_id,
            sequence_start=index == 0,
            sequence_end=index == len(frames) - 1,
        )
        outputs.append({name: result.as_numpy(name)[0] for name in ("MOTION", "CLASSIFIED", "FRAME_INDEX", "SCORES")})
    return outputs


def test_streams_keep_their_own_state(client):
    # Two streams at once (so their frames share batches), of different sizes and motion.
    streams = {
        101: stream_frames(seed=3, height=48, width=64, count=8, step=0),  # a still camera
        202: stream_frames(seed=4, height=60, width=80, count=8, step=4),  # a panning one
    }
    results: dict[int, list[dict]] = {}

    def run(stream_id):
        results[stream_id] = send_stream(client, stream_id, streams[stream_id])

    threads = [threading.Thread(target=run, args=(stream_id,)) for stream_id in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    for stream_id, frames in streams.items():
        got = results[stream_id]
        assert [int(r["FRAME_INDEX"][0]) for r in got] == list(range(len(frames)))
        expected_motion = [0.0] + [
            float(np.abs(cur.astype(np.float32) - prev.astype(np.float32)).mean())
            for prev, cur in zip(frames, frames[1:])
        ]
        np.testing.assert_allclose([float(r["MOTION"][0]) for r in got], expected_motion, rtol=1e-4, atol=1e-3)
    # The still stream is classified on its first frame only; the panning one on every frame.
    assert [bool(r["CLASSIFIED"][0]) for r in results[101]] == [True] + [False] * 7
    assert all(bool(r["CLASSIFIED"][0]) for r in results[202])


def test_classification_follows_the_stream_not_the_batch(client):
    still = stream_frames(seed=5, height=48, width=64, count=3, step=0)
    pipeline = ImagePipeline(Classifier(ClassifierSettings(seed=0)), k=5)
    expected = pipeline.classify_frames([torch.from_numpy(still[0])]).scores[0].numpy()
    got = send_stream(client, 303, still)
    for result in got:
        np.testing.assert_allclose(result["SCORES"], expected, rtol=1e-4)


def test_a_restarted_sequence_starts_afresh(client):
    first = send_stream(client, 404, stream_frames(seed=6, height=32, width=32, count=3, step=2))
    again = send_stream(client, 404, stream_frames(seed=7, height=40, width=40, count=2, step=0))
    assert [int(r["FRAME_INDEX"][0]) for r in first] == [0, 1, 2]
    # Another frame size and index 0: nothing of the ended sequence was kept.
    assert [int(r["FRAME_INDEX"][0]) for r in again] == [0, 1]
    assert float(again[0]["MOTION"][0]) == 0.0


def test_a_frame_of_another_size_fails_alone(client):
    frames = stream_frames(seed=8, height=32, width=32, count=3, step=0)
    client.infer("video_pipeline", [frame_input("FRAME", frames[0][None])], sequence_id=505, sequence_start=True)
    with pytest.raises(InferenceServerException, match="changed frame size"):
        client.infer("video_pipeline", [frame_input("FRAME", np.zeros((1, 16, 16, 3), np.uint8))], sequence_id=505)
    # The stream goes on from its last good frame.
    result = client.infer("video_pipeline", [frame_input("FRAME", frames[1][None])], sequence_id=505, sequence_end=True)
    assert int(result.as_numpy("FRAME_INDEX")[0, 0]) == 1


def test_video_events_answer_only_on_scene_changes_then_final(client):
    grey, bright = np.full((1, 36, 48, 3), 40, np.uint8), np.full((1, 36, 48, 3), 220, np.uint8)
    # Frames 0-3 grey, 4-6 bright (a cut at 4), 7-9 grey (a cut at 7); the sequence ends at 9.
    plan = [grey] * 4 + [bright] * 3 + [grey] * 3
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for stream_id in (601, 602):
            for index, frame in enumerate(plan):
                client.async_stream_infer(
                    "video_events",
                    [frame_input("FRAME", frame)],
                    sequence_id=stream_id,
                    sequence_start=index == 0,
                    sequence_end=index == len(plan) - 1,
                    request_id=f"{stream_id}/{index}",
                )
        events = [answers.get(timeout=120) for _ in range(6)]
    finally:
        client.stop_stream()
    assert answers.empty(), "no response beyond the events and the two sequence ends"

    assert all(error is None for _, error in events)
    per_stream: dict[str, list] = {}
    for result, _ in events:
        response = result.get_response()
        stream_id, request_index = response.id.split("/")
        kind = result.as_numpy("EVENT")[0, 0].decode()
        frame_index = int(result.as_numpy("FRAME_INDEX")[0, 0])
        final = response.parameters["triton_final_response"].bool_param
        assert frame_index == int(request_index), "an event answers the request of its own frame"
        per_stream.setdefault(stream_id, []).append((kind, frame_index, final))
    # Per stream, in order: a cut at 4 and at 7, then the end at 9 carrying the final flag.
    expected = [("scene_change", 4, False), ("scene_change", 7, False), ("sequence_end", 9, True)]
    assert per_stream == {"601": expected, "602": expected}


def test_video_events_bad_frame_gets_its_own_error(client):
    good, wrong = np.full((1, 24, 24, 3), 90, np.uint8), np.full((1, 12, 12, 3), 90, np.uint8)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index, (frame, end) in enumerate([(good, False), (wrong, False), (good, True)]):
            client.async_stream_infer(
                "video_events", [frame_input("FRAME", frame)], sequence_id=701,
                sequence_start=index == 0, sequence_end=end, request_id=f"701/{index}",
            )
        first, second = answers.get(timeout=120), answers.get(timeout=120)
    finally:
        client.stop_stream()
    (_, error), (result, no_error) = first, second
    assert error is not None and "changed frame size" in error.message()
    assert no_error is None and result.as_numpy("EVENT")[0, 0] == b"sequence_end"
    assert int(result.as_numpy("FRAME_INDEX")[0, 0]) == 1
