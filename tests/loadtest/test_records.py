"""Records, recorders, shapes and results: merging, JSON round trips, schedules (no server needed)."""

from __future__ import annotations

import json
import random

import pytest

from loadtest.records import DROPPED, OK, Recorder, RequestResult
from loadtest.results import RunResult, merge_results, summarize
from loadtest.run_config import ImageConfig, VideoConfig
from loadtest.shape import Shape, arrival_offsets_ns

MS = 1_000_000
T0 = 10_000_000_000


def synthetic_results(count: int, seed: int, video: bool = False) -> list[RequestResult]:
    rng = random.Random(seed)
    results = []
    for i in range(count):
        scheduled = T0 + i * 5 * MS
        stream = i % 3 if video else -1
        keyframe = video and (i // 3) % 10 == 0  # each stream's every tenth frame
        if video and rng.random() < 0.1:
            results.append(RequestResult(scheduled, 0, scheduled, DROPPED, stream, 100 * MS, keyframe))
            continue
        status = OK if rng.random() > 0.05 else "UNAVAILABLE"
        latency = int(rng.expovariate(1 / 20) * MS)
        results.append(RequestResult(scheduled, scheduled + MS, scheduled + latency, status, stream,
                                     100 * MS if video else 0, keyframe))
    return results


def recorded(results, measure_from_ns=T0) -> Recorder:
    recorder = Recorder(measure_from_ns)
    for result in results:
        recorder.record(result)
    return recorder


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_merged_recorders_equal_one_recorder_of_everything(video):
    results = synthetic_results(3000, seed=1, video=video)
    whole = recorded(results)
    # Workers split images request by request and video stream by stream (jitter follows a stream).
    pick = (lambda i, r: r.stream == 0) if video else (lambda i, r: i % 2 == 0)
    left = recorded([r for i, r in enumerate(results) if pick(i, r)])
    right = recorded([r for i, r in enumerate(results) if not pick(i, r)])
    left.merge(right)
    assert left.to_dict() == whole.to_dict()
    assert left.latency.get_value_at_percentile(99) == whole.latency.get_value_at_percentile(99)
    assert left.statuses == whole.statuses


def test_keyframe_slots_are_summarized_apart_from_the_others():
    results = synthetic_results(3000, seed=6, video=True)
    summary = summarize(RunResult("video", VideoConfig("x:1", "m", streams=3, fps=10), recorded(results)))
    by_frame = summary["video"]["by_frame"]
    for kind, keyframe in (("keyframes", True), ("other_frames", False)):
        mine = [r for r in results if r.keyframe == keyframe]
        row = by_frame[kind]
        assert row["slots"] == len(mine) and row["dropped"] == sum(r.status == DROPPED for r in mine)
        assert row["late"] == sum(r.late for r in mine) and row["errors"] == sum(r.status not in (OK, DROPPED) for r in mine)
    assert by_frame["keyframes"]["slots"] == 300
    assert sum(row["late"] for row in by_frame.values()) == summary["video"]["late"]


def test_raw_video_has_no_keyframe_rows():
    results = [r._replace(keyframe=False) for r in synthetic_results(300, seed=7, video=True)]
    summary = summarize(RunResult("video", VideoConfig("x:1", "m", streams=3, fps=10), recorded(results)))
    assert "by_frame" not in summary["video"]


def test_warm_up_is_left_out():
    results = synthetic_results(400, seed=2)
    recorder = recorded(results, measure_from_ns=T0 + 1000 * MS)
    measured = [r for r in results if r.scheduled_ns >= T0 + 1000 * MS]
    assert sum(recorder.statuses.values()) == len(measured)
    assert recorder.sent == len(measured)


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_result_survives_json_round_trip(tmp_path, video):
    config = VideoConfig("x:1", "m", streams=3, fps=10, slo_ms=50) if video else ImageConfig("x:1", "m", slo_ms=50)
    result = RunResult("video" if video else "image", config, recorded(synthetic_results(2000, 3, video)),
                       "2026-11-25T00:00:00+00:00", {"source": "triton", "requests": {"a": 10, "b": 30}})
    path = tmp_path / "run.json"
    result.save(path)
    loaded = RunResult.load(path)
    assert loaded.to_dict() == result.to_dict()
    assert summarize(loaded) == summarize(result)
    assert summarize(loaded)["server_share"] == {"a": 0.25, "b": 0.75}


def test_merge_results_adds_counts_and_server_requests():
    first = RunResult("image", ImageConfig("x:1", "m"), recorded(synthetic_results(500, 4)), servers={"requests": {"a": 5}})
    second = RunResult("image", ImageConfig("x:1", "m"), recorded(synthetic_results(700, 5)),
                       servers={"requests": {"a": 1, "b": 2}})
    merged = merge_results([first, second])
    assert merged.recorder.sent == first.recorder.sent + second.recorder.sent
    assert merged.servers["requests"] == {"a": 6, "b": 2}
    with pytest.raises(ValueError, match="different workloads"):
        merge_results([first, RunResult("video", VideoConfig("x:1", "m"), Recorder())])


def test_loading_something_else_is_a_clear_error(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something", "version": 1}))
    with pytest.raises(ValueError, match="not a load-test result"):
        RunResult.load(path)


def test_video_frames_late_and_dropped_are_counted_per_stream():
    deadline = 100 * MS
    results = [
        RequestResult(T0, T0, T0 + 150 * MS, OK, 0, deadline),  # late
        RequestResult(T0 + deadline, 0, T0 + deadline, DROPPED, 0, deadline),
        RequestResult(T0 + 2 * deadline, T0 + 2 * deadline, T0 + 2 * deadline + 10 * MS, OK, 0, deadline),
        RequestResult(T0, T0, T0 + 5 * MS, OK, 1, deadline),
    ]
    recorder = recorded(results)
    assert (recorder.streams[0].late, recorder.streams[0].dropped, recorder.streams[0].answered) == (1, 1, 2)
    assert (recorder.streams[1].late, recorder.streams[1].dropped) == (0, 0)
    assert recorder.streams[0].jitter_ms == pytest.approx(140, abs=0.5)


def test_shapes_and_schedules():
    assert len(arrival_offsets_ns(Shape.constant(200, 3))) == 600
    steps = arrival_offsets_ns(Shape.parse("1s@100,1s@300"))
    assert sum(1 for t in steps if t < 1e9) == 100 and len(steps) == 400
    ramp = Shape.parse("1s@0,2s@~200")
    assert ramp.level_at(2.0) == pytest.approx(100)
    poisson = arrival_offsets_ns(Shape.constant(1000, 5), poisson=True, seed=7)
    assert abs(len(poisson) - 5000) < 5000 * 0.05
    with pytest.raises(ValueError, match="bad shape stage"):
        Shape.parse("ten seconds")


def test_vectorized_recording_equals_recording_one_by_one():
    from loadtest.records import new_histogram, record_latency, record_many

    rng = random.Random(11)
    values = [int(rng.lognormvariate(8, 2)) for _ in range(20000)] + [0, 1, 2047, 2048, 10**12]
    one_by_one, at_once = new_histogram(), new_histogram()
    for value in values:
        record_latency(one_by_one, value)
    record_many(at_once, values)
    assert list(at_once.counts) == list(one_by_one.counts)
    assert (at_once.total_count, at_once.min_value, at_once.max_value) == (
        one_by_one.total_count, one_by_one.min_value, one_by_one.max_value)


def test_bad_options_are_clear_errors(tmp_path):
    from loadtest.payloads import TensorSpec, load_images, parse_resolution

    with pytest.raises(ValueError, match="datatype must be one of"):
        TensorSpec("m", datatype="FP32")
    with pytest.raises(ValueError, match="batch dimension"):
        TensorSpec("m", batch_size=4, batch_dim=False)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_resolution("huge")
    assert parse_resolution("4k") == (2160, 3840) and parse_resolution("320x200") == (200, 320)
    with pytest.raises(ValueError, match="no image files"):
        load_images(str(tmp_path), 2)
    with pytest.raises(ValueError, match="neither"):
        load_images(str(tmp_path / "absent"), 2)


def test_images_from_a_folder_and_batched_requests(tmp_path):
    from PIL import Image
    from tritonclient.grpc import service_pb2

    from loadtest.payloads import TensorSpec, image_requests, load_images, synthetic_image

    for index, size in enumerate([(40, 30), (64, 48)]):
        Image.fromarray(synthetic_image(size[1], size[0], index)).save(tmp_path / f"{index}.png")
    images = load_images(str(tmp_path), 8)
    assert [image.shape for image in images] == [(30, 40, 3), (48, 64, 3)]
    raw = service_pb2.ModelInferRequest.FromString(image_requests(TensorSpec("m", "FRAMES", "UINT8", 2), images)[0])
    assert list(raw.inputs[0].shape) == [2, 30, 40, 3] and len(raw.raw_input_contents[0]) == 2 * 30 * 40 * 3
    jpeg = service_pb2.ModelInferRequest.FromString(image_requests(TensorSpec("m", batch_size=2), images)[0])
    assert list(jpeg.inputs[0].shape) == [2, 1] and jpeg.raw_input_contents[0][4:6] == b"\xff\xd8"


def test_stability_needs_the_last_windows_to_agree():
    from loadtest.results import stability

    def run(latency_ms_by_second):
        results = []
        for second, latency_ms in enumerate(latency_ms_by_second):
            for i in range(100):
                scheduled = T0 + second * 1000 * MS + i * 10 * MS
                results.append(RequestResult(scheduled, scheduled, scheduled + latency_ms * MS, OK))
        return stability(recorded(results))

    assert run([50, 20, 20, 21, 20])["stable"]
    rising = run([20, 20, 30, 45, 70])
    assert not rising["stable"] and "mean_ms" in rising["reason"]
    assert not run([20, 20])["stable"]  # too short to have three windows


def test_server_shares_from_gateway_and_triton_metrics_text():
    from loadtest.server_share import parse, share

    gateway = """# TYPE tritonfleet_gateway_requests_total counter
tritonfleet_gateway_requests_total{model="m",backend="10.0.0.1:8001",method="ModelInfer",code="OK"} 30
tritonfleet_gateway_requests_total{model="m",backend="10.0.0.1:8001",method="ModelInfer",code="UNAVAILABLE"} 2
tritonfleet_gateway_requests_total{model="m",backend="10.0.0.2:8001",method="ModelInfer",code="OK"} 12
tritonfleet_gateway_requests_total{model="other",backend="10.0.0.2:8001",method="ModelInfer",code="OK"} 99
"""
    assert parse(gateway, "http://gw/metrics", "m") == {"10.0.0.1:8001": 32, "10.0.0.2:8001": 12}
    triton = """# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 7
nv_inference_request_success{model="other",version="1"} 5
"""
    assert parse(triton, "http://t0/metrics", "m") == {"http://t0/metrics": 7}
    servers = share({"a": 10, "b": 0}, {"a": 15, "b": 20}, ["http://gw/metrics"])
    assert servers == {"source": "gateway", "requests": {"a": 5, "b": 20}}
