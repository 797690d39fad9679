"""The typed run config in saved results: round trips, version-1 files, and keys that do not belong."""

from __future__ import annotations

import json

import pytest

from loadtest.results import VERSION, RunResult, SweepOutcome, merge_results, summarize
from loadtest.run_config import ImageConfig, VideoConfig
from loadtest.shape import Shape
from tests.loadtest.test_records import recorded, synthetic_results

# A version-1 result's config exactly as the old writer laid it out: the tensor spec flattened in,
# the workload and the shape's first level repeated, and the run's facts mixed with the settings.
V1_IMAGE_CONFIG = {
    "url": "127.0.0.1:8001", "model": "image_pipeline", "input": "IMAGE", "datatype": "BYTES", "batch_size": 2,
    "batch_dim": True, "jpeg_quality": 90, "warmup_s": 1.0, "window_s": 2, "slo_ms": 80.0, "timeout_s": 30.0,
    "workload": "image", "loop": "open", "poisson": True,
    "shape": [{"duration_s": 5.0, "level": 100.0, "ramp": False}, {"duration_s": 5.0, "level": 300.0, "ramp": True}],
    "level": 100.0, "source": "skimage", "resolution": "1080p", "workers": 3, "generator_cpu_s": 4.25,
    "merged_from": 2, "sweep": {"slo_ms": 80.0, "best": 300.0},
}
V1_VIDEO_CONFIG = {
    "url": "gw:8001", "model": "video_pipeline", "input": "FRAME", "datatype": "UINT8", "batch_size": 1,
    "batch_dim": True, "jpeg_quality": 90, "warmup_s": 1.0, "window_s": 1, "slo_ms": 0.0, "timeout_s": 30.0,
    "workload": "video", "streams": 3, "fps": 10, "mode": "unary", "duration_s": 20.0, "miss_tolerance": 0.05,
    "source": "synthetic 480p", "workers": 2, "generator_cpu_s": 1.5,
}


def v1_file(tmp_path, kind: str, config: dict):
    path = tmp_path / f"v1-{kind}.json"
    recorder = recorded(synthetic_results(600, 5, kind == "video"))
    path.write_text(json.dumps({"format": "tritonfleet.loadtest.result", "version": 1, "kind": kind,
                                "started_at": "2026-11-20T10:00:00+00:00", "config": config, "servers": {},
                                "trials": [], "summary": {}, "recorder": recorder.to_dict()}))
    return path


def test_a_version_1_image_result_loads_into_the_typed_record(tmp_path):
    result = RunResult.load(v1_file(tmp_path, "image", V1_IMAGE_CONFIG))
    assert result.config == ImageConfig(
        url="127.0.0.1:8001", model="image_pipeline", batch_size=2, window_s=2, slo_ms=80.0, workers=3,
        poisson=True, shape=Shape.parse("5s@100,5s@~300"), source="skimage", resolution="1080p")
    assert (result.generator_cpu_s, result.merged_from, result.sweep) == (4.25, 2, SweepOutcome(80.0, 300.0))
    # Saving writes the current version, which reads back the same.
    again = tmp_path / "again.json"
    result.save(again)
    assert json.loads(again.read_text())["version"] == VERSION == 2
    assert RunResult.load(again).to_dict() == result.to_dict()


def test_a_version_1_video_result_keeps_its_stream_settings(tmp_path):
    result = RunResult.load(v1_file(tmp_path, "video", V1_VIDEO_CONFIG))
    assert result.config == VideoConfig(url="gw:8001", model="video_pipeline", streams=3, fps=10, mode="unary",
                                        duration_s=20.0, miss_tolerance=0.05, workers=2)
    assert summarize(result)["video"]["streams"] == 3
    assert result.generator_cpu_s == 1.5 and result.merged_from == 1 and result.sweep is None


def _edit_config(data: dict, stray: bool) -> None:
    if stray:
        data["config"]["window_sec"] = 2
    else:
        del data["config"]["url"]


@pytest.mark.parametrize("stray, message", [
    (True, "unknown image config keys in result: window_sec"),
    (False, "image config in result lacks url"),
], ids=["stray-key", "missing-key"])
def test_a_version_2_config_with_a_stray_or_missing_key_is_refused(tmp_path, stray, message):
    data = RunResult("image", ImageConfig("x:1", "m"), recorded(synthetic_results(10, 1))).to_dict()
    _edit_config(data, stray)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        RunResult.load(path)


def test_a_result_and_its_config_must_agree_on_the_workload():
    with pytest.raises(ValueError, match="a video result cannot carry a image config"):
        RunResult("video", ImageConfig("x:1", "m"), recorded([]))


def test_merged_pods_keep_every_camera_stream_apart_and_add_their_facts():
    config = VideoConfig("gw:8001", "m", streams=3, fps=10)
    pods = [RunResult("video", config, recorded(synthetic_results(300, seed, True)), generator_cpu_s=1.0)
            for seed in (1, 2, 3)]
    merged = merge_results(pods)
    assert (merged.merged_from, merged.generator_cpu_s) == (3, 3.0)
    assert merged.config == VideoConfig("gw:8001", "m", streams=9, fps=10)
    # Pod k's stream s is stream 3k + s of the merged run, with exactly that pod's counts.
    rows = summarize(merged)["video"]["per_stream"]
    assert [row["stream"] for row in rows] == list(range(9))
    for index, pod in enumerate(pods):
        for stream, stats in pod.recorder.streams.items():
            merged_stats = merged.recorder.streams[3 * index + stream]
            assert (merged_stats.slots, merged_stats.answered) == (stats.slots, stats.answered)
    again = merge_results([merged, pods[0]])
    assert again.merged_from == 4 and again.config.streams == 12


def test_the_config_is_frozen():
    config = ImageConfig("x:1", "m")
    with pytest.raises(AttributeError):
        config.slo_ms = 5  # type: ignore[misc]
