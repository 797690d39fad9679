"""`loadtest video --codec`: encoded camera streams from a synthetic scene or a real MP4 file, sent to
the camera model on a real tritonserver."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import av
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from loadtest.channels import Channels
from loadtest.generators import Camera, CameraPlan
from loadtest.payloads import TensorSpec, synthetic_clip
from loadtest.records import STREAM_ERROR
from loadtest.results import RunResult, summarize
from loadtest.video_source import EncodedClip, UnitRequests, demux_file, encode_frames, unit_bodies
from models.video_decode import is_keyframe, nal_types
from tritonfleet.cli import main as cli_main
from tritonfleet.paths import MODEL_REPOSITORY
from tritonfleet.triton_server import start_fleet, stop_all

CAMERA = TensorSpec("camera_stream", "ACCESS_UNITS", "BYTES")


@pytest.fixture(scope="module")
def camera_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("camera-repo")
    shutil.copytree(MODEL_REPOSITORY / "camera_stream", repo / "camera_stream", ignore=shutil.ignore_patterns("__pycache__"))
    servers = start_fleet(1, repo, tmp_path_factory.mktemp("camera-triton"))
    yield servers[0]
    stop_all(servers)


def write_mp4(path, frames: int = 12, height: int = 120, width: int = 160) -> None:
    """An H.264 MP4 as a phone or an NVR would write it: length-prefixed NAL units, headers in the file."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.max_b_frames = 0
        for image in synthetic_clip(height, width, frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# The keyframe slots of a camera's 15 (3 s at 5 FPS over a 10-frame clip): the MP4's encoder keeps
# libx264's long GOP (one keyframe, slots 0 and 10), the synthetic clip has one a second (0, 5, 10).
@pytest.mark.parametrize("codec, source, keyframe_slots", [("h264", "mp4", 2), ("hevc", "synthetic", 3)])
def test_encoded_camera_streams_run_through_a_real_server_without_errors(camera_server, tmp_path, codec, source,
                                                                         keyframe_slots):
    if source == "mp4":
        source = str(tmp_path / "camera.mp4")
        write_mp4(source)
    out = tmp_path / "run.json"
    status = cli_main([
        "loadtest", "video", "--url", camera_server.grpc_url, "--codec", codec, "--source", source,
        "--streams", "2", "--fps", "5", "--duration", "3", "--warmup", "0", "--resolution", "160x120",
        "--clip-frames", "10", "--workers", "1", "--quiet", "-o", str(out),
    ])
    assert status == 0
    result = RunResult.load(out)
    summary = summarize(result)
    assert result.config.model == "camera_stream" and result.config.source.startswith(codec)
    assert summary["errors"] == 0, summary["statuses"]
    assert summary["ok"] > 0
    # Every frame slot of both cameras is accounted for: answered (on time or late) or dropped.
    rows = summary["video"]["per_stream"]
    assert len(rows) == 2 and all(r["answered"] + r["dropped"] == r["slots"] == 15 for r in rows)
    # ... and counted apart by whether it carried a keyframe.
    kinds = summary["video"]["by_frame"]
    assert {kind: row["slots"] for kind, row in kinds.items()} == {
        "keyframes": 2 * keyframe_slots, "other_frames": 2 * (15 - keyframe_slots)}
    assert sum(row["late"] for row in kinds.values()) == summary["video"]["late"]


def test_a_dropped_frame_is_sent_with_the_next_one():
    clip = EncodedClip("h264", [bytes([0, 0, 0, 1, 0x65, n]) for n in range(6)])
    plan = CameraPlan(0, 77, 5.0, 10, 0, unit_bodies(CAMERA, clip), UnitRequests(CAMERA, clip))
    request = service_pb2.ModelInferRequest()
    request.ParseFromString(plan.request(5, False, False, skipped=(3, 4)))
    units, codec = request.inputs
    assert (units.name, list(units.shape), codec.name) == ("ACCESS_UNITS", [1, 3], "CODEC")
    assert request.raw_input_contents[0] == b"".join(len(u).to_bytes(4, "little") + u for u in clip.units[3:6])
    assert request.parameters["sequence_id"].int64_param == 77
    # Without a skipped slot, the pre-encoded one-unit body goes out.
    request.ParseFromString(plan.request(6, False, False))
    assert list(request.inputs[0].shape) == [1, 1] and request.raw_input_contents[0].endswith(clip.units[0])


def test_an_mp4_file_becomes_annex_b_access_units(tmp_path):
    path = tmp_path / "camera.mp4"
    write_mp4(path)
    clip = demux_file("h264", str(path), 8)
    units = clip.units
    assert len(units) == 8
    assert is_keyframe("h264", nal_types("h264", units[0]))  # nal_types refuses anything not Annex B
    assert all(nal_types("h264", unit) for unit in units)
    assert clip.keyframes == {i for i, unit in enumerate(units) if is_keyframe("h264", nal_types("h264", unit))} == {0}
    with pytest.raises(ValueError, match="holds h264 video, not hevc"):
        demux_file("hevc", str(path), 8)


def test_a_synthetic_clip_starts_on_a_keyframe_each_second():
    clip = encode_frames("hevc", synthetic_clip(64, 96, 12), fps=5)
    keyframes = [i for i, unit in enumerate(clip.units) if is_keyframe("hevc", nal_types("hevc", unit))]
    assert len(clip.units) == 12 and keyframes == [0, 5, 10]
    assert clip.keyframes == {0, 5, 10} and [clip.is_keyframe(slot) for slot in (12, 13, 17)] == [True, False, True]


@pytest.mark.parametrize("mode, status", [("stream", STREAM_ERROR), ("unary", "INVALID_ARGUMENT")])
def test_a_refused_frame_is_counted_by_what_the_server_said(camera_server, mode, status):
    """Access units the decoder cannot read: on a stream Triton answers with an error_message and no
    status code (STREAM_ERROR), a unary call carries the model's INVALID_ARGUMENT; either way every
    slot is settled and the camera goes on to the end of its run."""
    clip = EncodedClip("h264", [bytes([0, 0, 0, 1, 0x65, 0x88, n, 0xFF]) for n in range(4)])
    plan = CameraPlan(0, 4242, 20.0, 4, 0, unit_bodies(CAMERA, clip), UnitRequests(CAMERA, clip))
    results = []

    async def run():
        channels = Channels(camera_server.grpc_url, 1)
        await channels.ready()
        plan.start_ns = time.monotonic_ns()
        await asyncio.wait_for(Camera(channels, plan, mode, results.append, timeout_s=30).run(), 60)
        await channels.close()

    asyncio.run(run())
    assert [r.status for r in results] == [status] * 4
