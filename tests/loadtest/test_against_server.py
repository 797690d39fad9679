"""The harness against a real tritonserver on the tiny models: pacing, stalls, late and dropped frames."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tritonfleet.cli import main as cli_main
from loadtest.channels import Channels
from loadtest.generators import Camera, CameraPlan, now_ns
from loadtest.payloads import TensorSpec
from loadtest.results import RunResult, summarize
from loadtest.runs import ImageOptions, VideoOptions, run_image, run_video, video_bodies
from loadtest.server_share import snapshot
from loadtest.shape import Shape
from tests.loadtest.conftest import TINY_REPOSITORY

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "METRICS.md"


def test_open_loop_sends_at_the_requested_rate(tiny_server):
    result = run_image(ImageOptions(url=tiny_server.grpc_url, tensor=TensorSpec("tiny_image"),
                                    shape=Shape.constant(200, 3), warmup_s=0.5, workers=2, quiet=True,
                                    metrics_urls=[tiny_server.metrics_url]))
    summary = summarize(result)
    assert summary["statuses"] == {"OK": 600}
    # Every request of the schedule was sent, each counted in the second it was scheduled for.
    recorder = result.recorder
    assert recorder.sent == 600 and sorted(recorder.timeline) == [0, 1, 2], sorted(recorder.timeline)
    assert sum(second.sent for second in recorder.timeline.values()) == 600
    # Triton's own counter saw this run's requests, warm-up included (100 more).
    assert result.servers["requests"] == {tiny_server.metrics_url: 700}


def test_closed_loop_keeps_the_concurrency_busy_and_raw_frames_work(tiny_server):
    result = run_image(ImageOptions(url=tiny_server.grpc_url, tensor=TensorSpec("tiny_raw", "FRAMES", "UINT8", 2),
                                    shape=Shape.constant(4, 2), loop="closed", warmup_s=0.2, workers=2, quiet=True))
    summary = summarize(result)
    assert summary["ok"] > 4 and summary["errors"] == 0


def test_a_stalled_server_shows_up_as_latency_at_the_scheduled_send_times(triton_fleet):
    server = triton_fleet(1, repo=TINY_REPOSITORY)[0]
    rate, stall_s = 100, 2.0  # two seconds always hold one whole second of the timeline
    stall = {}

    def freeze_server():
        # Stall once the load has run about a second (the server has answered a second's worth).
        deadline = time.monotonic() + 30
        while snapshot([server.metrics_url]).get(server.metrics_url, 0) < rate:
            if time.monotonic() > deadline:
                stall["never"] = "the server did not answer a second's worth of requests in 30 s"
                return
            time.sleep(0.05)
        stall["start"] = time.monotonic_ns()
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(stall_s)  # the fault itself: how long the server stays frozen
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
            stall["end"] = time.monotonic_ns()

    freezer = threading.Thread(target=freeze_server)
    freezer.start()
    try:
        result = run_image(ImageOptions(url=server.grpc_url, tensor=TensorSpec("tiny_image"), workers=1,
                                        shape=Shape.constant(rate, 7), warmup_s=0, quiet=True))
    finally:
        freezer.join()
    assert "never" not in stall, stall["never"]
    recorder = result.recorder
    assert recorder.statuses == {"OK": rate * 7}
    # A whole second of the timeline lies inside the stall: every request scheduled in it was still
    # sent on schedule, and waited at least until the stall ended, counted from its scheduled time.
    first = -(-(stall["start"] - recorder.measure_from_ns) // 1_000_000_000)
    second = recorder.timeline[first]
    second_end_ns = recorder.measure_from_ns + (first + 1) * 1_000_000_000
    assert second_end_ns <= stall["end"]
    assert second.sent == rate
    assert second.latency.get_min_value() / 1000 >= (stall["end"] - second_end_ns) / 1e6 * 0.99
    assert recorder.latency.get_max_value() / 1e6 >= stall_s * 0.9


@pytest.mark.parametrize("mode", ["stream", "unary"])
def test_a_model_slower_than_the_frame_period_makes_late_and_dropped_frames(tiny_server, mode):
    fps, seconds, streams = 10, 3, 2
    result = run_video(VideoOptions(url=tiny_server.grpc_url, tensor=TensorSpec("tiny_stream_slow", "FRAME"),
                                    streams=streams, fps=fps, duration_s=seconds, warmup_s=0, mode=mode,
                                    workers=2, quiet=True))
    video = summarize(result)["video"]
    assert video["streams"] == streams and video["sustained"] == 0
    for row in video["per_stream"]:
        assert row["slots"] == fps * seconds
        assert row["errors"] == 0
        # 150 ms per frame at a 100 ms period: every answer is late, and the slot after a send is still
        # waiting for that answer, so it is dropped (but the last slot has no slot after it).
        assert row["late"] == row["answered"] > 0
        assert row["dropped"] >= row["answered"] - 1
        # Each slot either sent its frame (and it was answered) or dropped it: none is lost or counted twice.
        assert row["answered"] + row["dropped"] == row["slots"]
    assert video["late"] == sum(r["late"] for r in video["per_stream"])


def test_camera_streams_on_a_fast_model_are_sequences_the_server_accepts(tiny_server):
    result = run_video(VideoOptions(url=tiny_server.grpc_url, tensor=TensorSpec("tiny_stream", "FRAME"),
                                    streams=3, fps=20, duration_s=2, warmup_s=0, workers=1, quiet=True))
    summary = summarize(result)
    assert summary["errors"] == 0
    assert sum(r["answered"] + r["dropped"] for r in summary["video"]["per_stream"]) == 3 * 40


def test_bad_model_name_is_counted_as_errors_not_a_crash(tiny_server):
    result = run_image(ImageOptions(url=tiny_server.grpc_url, tensor=TensorSpec("no_such_model"),
                                    shape=Shape.constant(50, 1), warmup_s=0, workers=1, quiet=True))
    assert dict(result.recorder.statuses) == {"NOT_FOUND": 50}


def _metric_names_from_doc() -> set[str]:
    section = METRICS_DOC.read_text().split("## Load generator", 1)[1]
    return set(re.findall(r"`(tritonfleet_loadtest_[a-z_]+)`", section))


def test_live_metrics_are_served_with_the_documented_names(tiny_server, free_port):
    scraped = {}

    def scrape():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "text" not in scraped:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/metrics", timeout=1) as reply:
                    text = reply.read().decode()
                if 'status="ok"' in text:
                    scraped["text"] = text
            except OSError:
                pass
            time.sleep(0.2)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    run_video(VideoOptions(url=tiny_server.grpc_url, tensor=TensorSpec("tiny_stream", "FRAME"), streams=2, fps=10,
                           duration_s=3, warmup_s=0, workers=1, quiet=True, metrics_port=free_port))
    scraper.join()
    served = set(re.findall(r"^(tritonfleet_loadtest_[a-z_]+?)(?:_bucket|_count|_sum|_created)?[{ ]",
                            scraped["text"], re.M))
    assert served == _metric_names_from_doc()


@pytest.fixture
def free_port():
    from tritonfleet.triton_server import free_port as pick

    return pick()


def test_cli_image_sweep_report_and_compare(tiny_server, tmp_path, capsys):
    image = tmp_path / "image.json"
    sweep = tmp_path / "sweep.json"
    common = ["--url", tiny_server.grpc_url, "--model", "tiny_image", "--workers", "1", "--quiet", "--warmup", "0.2"]
    assert cli_main(["loadtest", "image", *common, "--rate", "50", "--duration", "2", "-o", str(image),
                     "--source", "skimage"]) == 0
    assert cli_main(["loadtest", "sweep", "image", *common, "--slo-ms", "1000", "--start", "40", "--limit", "80",
                     "--trial", "3", "-o", str(sweep)]) == 0
    trials = RunResult.load(sweep).trials
    assert [t["level"] for t in trials][:1] == [40] and all("passed" in t for t in trials)
    html = tmp_path / "report.html"
    assert cli_main(["loadtest", "report", str(image), "--format", "html", "-o", str(html)]) == 0
    assert html.read_text().count("<svg") >= 3
    # Several results (one per load pod) are merged into one report that counts all of them.
    second = tmp_path / "image-2.json"
    assert cli_main(["loadtest", "image", *common, "--rate", "30", "--duration", "2", "-o", str(second)]) == 0
    merged = tmp_path / "merged.json"
    assert cli_main(["loadtest", "report", str(image), str(second), "--format", "json", "-o", str(merged)]) == 0
    merged_data = json.loads(merged.read_text())
    assert merged_data["merged_from"] == 2
    assert merged_data["summary"]["statuses"] == {"OK": 100 + 60}, merged_data["summary"]["statuses"]
    assert cli_main(["loadtest", "compare", str(image), str(sweep)]) == 0
    assert "image" in capsys.readouterr().out
    assert cli_main(["loadtest", "report", str(tmp_path / "missing-dir")]) != 0


def test_cli_video_sweep_passes_a_level_only_when_the_model_keeps_up(tiny_server, tmp_path):
    """A video sweep on a model that takes 150 ms a frame: one stream at 4 FPS (250 ms a frame) is
    sustained, at 10 FPS none is. The model's sleep dominates its latency, so the trials are stable;
    the warm-up keeps its cold start out, and 100 ms of headroom per frame with a tolerance of a fifth
    of the frames keeps a busy host's hiccup from deciding the outcome."""
    common = ["--url", tiny_server.grpc_url, "--model", "tiny_stream_slow", "--input", "FRAME", "--datatype", "BYTES",
              "--workers", "1", "--quiet", "--warmup", "1", "--clip-frames", "2", "--slo-ms", "1000",
              "--miss-tolerance", "0.2", "--start", "1", "--trial", "4"]
    keeps_up = tmp_path / "keeps-up.json"
    assert cli_main(["loadtest", "sweep", "video", *common, "--fps", "4", "--limit", "1", "-o", str(keeps_up)]) == 0
    result = RunResult.load(keeps_up)
    assert [(t["level"], t["passed"]) for t in result.trials] == [(1, True)], result.trials
    assert result.sweep.best == 1 and summarize(result)["video"]["sustained"] == 1
    falls_behind = tmp_path / "falls-behind.json"
    assert cli_main(["loadtest", "sweep", "video", *common, "--fps", "10", "--limit", "2",
                     "-o", str(falls_behind)]) == 0
    result = RunResult.load(falls_behind)
    # Every frame answered (no errors), but late or dropped: the first level already fails.
    assert [(t["level"], t["passed"], t["errors"]) for t in result.trials] == [(1, False, 0)], result.trials
    assert result.sweep.best == 0


def camera_slots(server, frames_in_flight: int, slots: int = 6, fps: float = 10.0) -> list[str]:
    """One camera's slots on tiny_stream_slow (150 ms a frame), in order: OK or DROPPED each."""
    bodies = video_bodies(VideoOptions(url=server.grpc_url, tensor=TensorSpec("tiny_stream_slow", "FRAME"),
                                       resolution="64x48", clip_frames=4))
    results: list = []

    async def run() -> None:
        channels = Channels(server.grpc_url, 1)
        await channels.ready()
        plan = CameraPlan(0, 7_000 + frames_in_flight, fps, slots, now_ns() + 50_000_000, bodies)
        try:
            await Camera(channels, plan, "stream", results.append, 30.0, frames_in_flight).run()
        finally:
            await channels.close()

    asyncio.run(run())
    return [result.status for result in sorted(results, key=lambda result: result.scheduled_ns)]


def test_a_camera_with_frames_in_flight_sends_while_earlier_frames_await_answers(tiny_server):
    """150 ms a frame at a 100 ms period: a camera that waits for each answer drops its second slot
    (its first frame cannot be back yet); one allowed three in flight sends its first three slots."""
    waits, streams_on = camera_slots(tiny_server, 1), camera_slots(tiny_server, 3)
    assert waits[:2] == ["OK", "DROPPED"]
    assert streams_on[:3] == ["OK", "OK", "OK"]
    for statuses in (waits, streams_on):
        assert len(statuses) == 6 and set(statuses) <= {"OK", "DROPPED"}


def test_frames_in_flight_are_for_streams_only(tiny_server):
    with pytest.raises(ValueError, match="1 with --mode unary"):
        run_video(VideoOptions(url=tiny_server.grpc_url, tensor=TensorSpec("tiny_stream_slow", "FRAME"),
                               mode="unary", frames_in_flight=2, quiet=True))
