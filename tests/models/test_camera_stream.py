"""The camera model on a real tritonserver: H.264 and H.265 clips made with PyAV, decoded per sequence.

One server for the module, serving only `camera_stream` with a decoder limit of 2, so the limit
can be reached with three cameras.
"""

from __future__ import annotations

import contextlib
import queue
import re
import shutil
import threading
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from models.camera import (
    CameraAnalyzer, CameraRequest, CameraService, CameraStreams, DecoderLimit, PHASE_BUCKETS_S, RequestPhases, decode,
    warm_up_sizes,
)
from models.classifier import Classifier, ClassifierSettings
from models.pipeline import ImagePipeline, TopK
from models.profiles import PROFILES_FILE, ProfileError, render_configs
from models.video import StreamError, VideoSettings, keep_on_host
from models.video_decode import PyAVDecoder, blank_keyframe
from tests.models.camera_clips import codec_input, encode_clip, offline_analysis, offline_motion, units_input
from tritonfleet.paths import MODEL_REPOSITORY
from tritonfleet.proxies import GatewayProcess
from tritonfleet.triton_server import start_fleet, stop_all

MODEL = "camera_stream"
MAX_DECODERS = 2


@pytest.fixture(scope="module")
def camera_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("camera-repo")
    shutil.copytree(MODEL_REPOSITORY / MODEL, repo / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    config = repo / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace(
        'key: "MAX_DECODERS" value { string_value: "16" }', f'key: "MAX_DECODERS" value {{ string_value: "{MAX_DECODERS}" }}'
    ).replace(
        # The instance runs a warm-up picture through the analysis before it turns ready: every
        # test below then also checks that the warm-up left no stream state behind.
        'key: "WARMUP" value { string_value: "" }', 'key: "WARMUP" value { string_value: "320x240" }'
    ).replace(
        # Every camera below starts on a session that already decoded a grey keyframe: the clips'
        # analyses then also check that nothing of that keyframe reaches a camera.
        'key: "WARM_DECODERS" value { string_value: "0" }', 'key: "WARM_DECODERS" value { string_value: "2" }'
    ).replace(
        # Two analysis shards, as the cpu profile has several: every test below also checks that
        # sharding changes nothing a client sees (the service tests run with one).
        'key: "ANALYSIS_THREADS" value { string_value: "4" }', 'key: "ANALYSIS_THREADS" value { string_value: "2" }'
    ))
    assert 'key: "ANALYSIS_THREADS" value { string_value: "2" }' in config.read_text()
    servers = start_fleet(1, repo, tmp_path_factory.mktemp("camera-triton"))
    yield servers[0]
    stop_all(servers)


@pytest.fixture
def client(camera_server):
    with grpcclient.InferenceServerClient(camera_server.grpc_url) as connection:
        yield connection


@pytest.fixture(scope="module")
def clips():
    return {codec: encode_clip(codec) for codec in ("h264", "hevc")}


def send(client, stream: int, units: list[bytes], *, start=False, end=False, codec: str | None = None):
    inputs = [units_input(units)] + ([codec_input(codec)] if codec else [])
    return client.infer(MODEL, inputs, sequence_id=stream, sequence_start=start, sequence_end=end)


def outputs(result) -> dict:
    return {
        "status": result.as_numpy("STATUS")[0, 0].decode(),
        "decoded": int(result.as_numpy("FRAMES_DECODED")[0, 0]),
        "index": result.as_numpy("FRAME_INDEX")[0].tolist(),
        "motion": result.as_numpy("MOTION")[0].tolist(),
        "labels": result.as_numpy("LABELS")[0],
        "classified": result.as_numpy("CLASSIFIED")[0].tolist(),
        "scores": result.as_numpy("SCORES")[0],
    }


def chunks(units: list[bytes], sizes=(1, 2, 3)) -> list[list[bytes]]:
    """The clip cut into requests of 1, 2, 3, 1, 2, 3... access units."""
    out, at, n = [], 0, 0
    while at < len(units):
        size = sizes[n % len(sizes)]
        out.append(units[at : at + size])
        at, n = at + size, n + 1
    return out


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_a_clip_decodes_to_the_same_analysis_as_offline(client, clips, codec):
    units = clips[codec]
    requests = chunks(units)
    got = [
        outputs(send(client, 11, part, start=i == 0, end=i == len(requests) - 1, codec=codec))
        for i, part in enumerate(requests)
    ]
    assert {r["status"] for r in got} == {"decoding"}
    assert [i for r in got for i in r["index"]] == list(range(len(units)))
    assert sum(r["decoded"] for r in got) == len(units)
    assert all(r["labels"].shape == (r["decoded"], 5) for r in got)
    offline = offline_analysis(codec, units)
    motion = [m for r in got for m in r["motion"]]
    np.testing.assert_allclose(motion, [f.motion for f in offline], rtol=1e-5, atol=1e-4)
    assert max(motion) > 0.1  # the box moves: a clip of equal frames would prove nothing
    # Classified from the decoded colour planes, as offline: the same scores, on the same frames.
    assert [c for r in got for c in r["classified"]] == [f.classified for f in offline]
    np.testing.assert_allclose(got[0]["scores"][0], offline[0].scores.numpy(), rtol=1e-4, atol=1e-6)


def test_a_sequence_joined_between_keyframes_waits_for_one(client, clips):
    units = clips["h264"]  # keyframes at 0, 10, 20
    waiting = [outputs(send(client, 12, units[3:5], start=True)), outputs(send(client, 12, units[5:10]))]
    assert [(r["status"], r["decoded"], r["motion"]) for r in waiting] == [("waiting_for_keyframe", 0, [])] * 2
    resumed = [outputs(send(client, 12, units[10:20])), outputs(send(client, 12, units[20:], end=True))]
    assert [r["status"] for r in resumed] == ["decoding", "decoding"]
    assert [i for r in resumed for i in r["index"]] == list(range(20))
    np.testing.assert_allclose(
        [m for r in resumed for m in r["motion"]], offline_motion("h264", units[10:]), rtol=1e-5, atol=1e-4
    )


def test_a_corrupt_access_unit_fails_its_stream_alone_until_the_next_keyframe(client, clips):
    units = clips["h264"]
    truncated = units[5][: len(units[5]) // 2]
    other = clips["hevc"]
    # Another camera on a bidirectional stream, its access units interleaved with the damaged one's.
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    damaged = []
    try:
        for i in range(len(units)):
            client.async_stream_infer(
                MODEL, [units_input([other[i]]), codec_input("hevc")],
                sequence_id=21, sequence_start=i == 0, sequence_end=i == len(units) - 1,
            )
            try:
                damaged.append(outputs(send(client, 22, [truncated if i == 5 else units[i]], start=i == 0, end=i == len(units) - 1)))
            except InferenceServerException as exc:
                damaged.append(exc)
        streamed = [answers.get(timeout=120) for _ in range(len(other))]
    finally:
        client.stop_stream()

    error = damaged[5]
    assert isinstance(error, InferenceServerException) and error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "stream 22" in error.message() and "next keyframe" in error.message()
    assert [r["status"] for r in damaged[:5]] == ["decoding"] * 5
    assert [(r["status"], r["decoded"]) for r in damaged[6:10]] == [("waiting_for_keyframe", 0)] * 4
    assert [r["status"] for r in damaged[10:]] == ["decoding"] * 20
    assert [i for r in damaged[10:] for i in r["index"]] == list(range(5, 25))
    # The other camera saw none of it.
    assert [error for _, error in streamed] == [None] * len(other)
    motion = [m for result, _ in streamed for m in outputs(result)["motion"]]
    np.testing.assert_allclose(motion, offline_motion("hevc", other), rtol=1e-5, atol=1e-4)


def rejected_total(server) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    values = re.findall(r'^tritonfleet_camera_rejected_total\{[^}]*model="camera_stream"[^}]*\} (\S+)$', text, re.M)
    return sum(float(v) for v in values)


def wait_for(condition, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the bound")
        time.sleep(0.2)


def test_the_decoder_limit_refuses_a_new_camera_and_an_ended_stream_frees_its_decoder(client, camera_server, clips):
    units = clips["h264"]
    before = rejected_total(camera_server)
    for stream in (31, 32):
        assert outputs(send(client, stream, units[:1], start=True))["decoded"] == 1
    with pytest.raises(InferenceServerException) as refused:
        send(client, 33, units[:1], start=True)
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert "decoder limit" in refused.value.message()
    wait_for(lambda: rejected_total(camera_server) == before + 1)
    # The cameras already admitted go on as before.
    assert outputs(send(client, 32, units[1:3]))["index"] == [1, 2]

    send(client, 31, units[1:2], end=True)
    assert outputs(send(client, 33, units[:2], start=True))["index"] == [0, 1]
    send(client, 32, units[3:4], end=True)
    send(client, 33, units[2:3], end=True)


PHASE_BUCKET = re.compile(r'^tritonfleet_camera_request_phase_seconds_(bucket|count)\{([^}]*)\} (\S+)$', re.M)


def phase_histograms(server) -> dict[str, dict]:
    """Per phase, the camera model's published buckets ({le: count}) and count, summed over instances."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    out: dict[str, dict] = {}
    for kind, label_text, value in PHASE_BUCKET.findall(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if labels.get("model") != MODEL:
            continue
        phase = out.setdefault(labels["phase"], {"buckets": {}, "count": 0.0})
        if kind == "count":
            phase["count"] += float(value)
        else:
            le = float(labels["le"])  # float() reads "+Inf" too
            phase["buckets"][le] = phase["buckets"].get(le, 0.0) + float(value)
    return out


def consistent(histograms: dict[str, dict]) -> bool:
    """Every phase a histogram Prometheus can read: cumulative buckets, +Inf equal to the count."""
    for phase in histograms.values():
        counts = [count for _, count in sorted(phase["buckets"].items())]
        if counts != sorted(counts) or counts[-1] != phase["count"]:
            return False
    return True


def test_each_phase_of_a_request_is_a_histogram_on_the_metrics_endpoint(client, camera_server, clips):
    units = clips["h264"]

    def answered() -> float:
        return phase_histograms(camera_server).get("total", {}).get("count", 0.0)

    before = answered()
    send(client, 61, units[:1], start=True)
    sent = 1
    # Published at most once a second, after an analysis round: the camera keeps sending meanwhile.
    def counted() -> bool:
        nonlocal sent
        if answered() >= before + 3:
            return True
        if sent < len(units) - 1:
            send(client, 61, units[sent : sent + 1])
            sent += 1
        return False

    wait_for(counted)
    send(client, 61, units[sent : sent + 1], end=True)
    wait_for(lambda: consistent(phase_histograms(camera_server)))
    histograms = phase_histograms(camera_server)
    assert sorted(histograms) == sorted(RequestPhases.PHASES)
    assert all(phase["count"] >= before + 3 for phase in histograms.values()), histograms
    assert len(histograms["decode"]["buckets"]) == len(PHASE_BUCKETS_S) + 1


def test_a_camera_that_leaves_ends_its_sequence_with_no_access_units(client, clips):
    units = clips["h264"]
    for stream in (61, 62):  # the test server's instance decodes two cameras
        send(client, stream, units[:1], start=True)
    ended = outputs(send(client, 61, [], end=True))
    assert ended["status"] == "decoding" and ended["decoded"] == 0 and ended["index"] == []
    assert outputs(send(client, 63, units[:1], start=True))["index"] == [0]  # 61's decoder was freed
    for stream in (62, 63):
        send(client, stream, [], end=True)


@pytest.mark.parametrize(
    "units, codec, message",
    [
        ([b"not annex b at all"], None, "start code"),
        ([], None, "at least one access unit"),
        ([b"\x00\x00\x00\x01\x67"], "vp9", "unknown codec"),
    ],
    ids=["not-annex-b", "no-units", "unknown-codec"],
)
def test_bad_requests_are_invalid_argument(client, units, codec, message):
    with pytest.raises(InferenceServerException) as bad:
        send(client, 41, units, start=True, end=True, codec=codec)
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in bad.value.message()


class FakeDecoder:
    def __init__(self, closed: list):
        self.closed = closed

    def close(self):
        self.closed.append(self)


def test_silent_streams_give_their_decoder_back():
    now, closed = [0.0], []
    streams = CameraStreams(lambda codec: FakeDecoder(closed), max_decoders=1, idle_timeout_s=60, clock=lambda: now[0])
    streams.open(1, "h264")
    with pytest.raises(DecoderLimit):
        streams.open(2, "h264")
    now[0] = 61.0
    streams.open(2, "h264")  # stream 1 went silent: its session is freed for the new camera
    assert list(streams.streams) == [2] and len(closed) == 1
    with pytest.raises(StreamError, match="idled out"):
        streams.get(1)


def test_cameras_start_on_warm_sessions_and_decode_only_their_own_pictures(clips):
    made = []

    def make(codec):
        made.append(PyAVDecoder(codec))
        return made[-1]

    streams = CameraStreams(make, max_decoders=2, idle_timeout_s=60)
    streams.prepare("h264", 5, blank_keyframe("h264", 240, 320))
    assert len(streams.warm["h264"]) == 2 and len(made) == 2  # never more than the instance admits
    first = streams.open(1, "h264")
    assert first.decoder in made and len(made) == 2  # the camera took a warm session, made none
    pictures = decode(first, clips["h264"], end=True).pictures
    fresh = CameraStreams(PyAVDecoder, max_decoders=1, idle_timeout_s=60).open(1, "h264")
    expected = decode(fresh, clips["h264"], end=True).pictures
    assert len(pictures) == len(expected) == len(clips["h264"])
    for got, want in zip(pictures, expected):
        assert torch.equal(got.luma, want.luma)


def frame_threaded(codec):
    """FFmpeg with frame threads holds pictures back, as NVDEC's native latency does."""
    decoder = PyAVDecoder(codec)
    decoder._context.thread_type, decoder._context.thread_count = "FRAME", 4
    return decoder


def test_warm_sessions_refuse_a_decoder_that_holds_the_keyframe_back():
    streams = CameraStreams(frame_threaded, max_decoders=2, idle_timeout_s=60)
    with pytest.raises(ValueError, match="WARM_DECODERS needs decoders that hand out each picture"):
        streams.prepare("h264", 2, blank_keyframe("h264", 240, 320))


def test_the_gpu_profile_gives_the_camera_model_its_decoder_budget(tmp_path):
    gpu = render_configs("gpu")["camera_stream"]
    per_instance = int(gpu.parameters["MAX_DECODERS"].string_value)
    assert per_instance * gpu.instance_group[0].count >= 120
    # Triton admits no more sequences to an instance than it has decoders for, so none is refused
    # while another instance has room.
    assert gpu.sequence_batching.oldest.max_candidate_sequences == per_instance
    assert gpu.parameters["WARMUP"].string_value == "1920x1080"
    # A camera that fell behind sends several access units at once: its request still batches.
    assert [i.allow_ragged_batch for i in gpu.input if i.name == "ACCESS_UNITS"] == [True]
    assert gpu.parameters["WARM_DECODERS"].string_value == gpu.parameters["MAX_DECODERS"].string_value
    assert render_configs("cpu")["camera_stream"].parameters["MAX_DECODERS"].string_value == "16"
    # Shards where the classifier is slow (CPU); one analysis thread where it was measured (H200).
    assert render_configs("cpu")["camera_stream"].parameters["ANALYSIS_THREADS"].string_value == "4"
    assert gpu.parameters["ANALYSIS_THREADS"].string_value == "1"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES_FILE.read_text().replace("MAX_DECODERS:", "MAX_DECODER:"))
    with pytest.raises(ProfileError, match=r"parameters \['MAX_DECODER'\] are not in its config.pbtxt"):
        render_configs("gpu", profiles=profiles)


def test_warm_up_sizes_are_width_by_height():
    assert warm_up_sizes("") == []
    assert warm_up_sizes("1920x1080, 320x240") == [(1080, 1920), (240, 320)]
    with pytest.raises(ValueError, match="WARMUP must be sizes like 1920x1080"):
        warm_up_sizes("1080p")


def test_a_classification_reaches_the_host_in_one_tensor_unchanged():
    torch.manual_seed(0)
    top = TopK(indices=torch.stack([torch.randperm(1000)[:5] for _ in range(3)]), scores=torch.rand(3, 5))
    chosen = [SimpleNamespace(state=SimpleNamespace(indices=None, scores=None)) for _ in range(3)]
    keep_on_host(chosen, top)
    for row, m in enumerate(chosen):
        assert torch.equal(m.state.scores, top.scores[row]) and torch.equal(m.state.indices, top.indices[row])
        assert m.state.indices.dtype == torch.int64


@contextlib.contextmanager
def camera_service(make_decoder=PyAVDecoder, decode_threads: int = 1, clock=time.monotonic, analysis_threads: int = 1,
                   pipeline: ImagePipeline | None = None):
    """A CameraService of two decoders and its (first) analyzer, closed when the block ends."""
    analyzer = CameraAnalyzer(pipeline or ImagePipeline(Classifier(ClassifierSettings(seed=0)), k=5), VideoSettings())
    service = CameraService(CameraStreams(make_decoder, max_decoders=2, idle_timeout_s=60, clock=clock), analyzer,
                            "h264", decode_threads=decode_threads, analysis_threads=analysis_threads)
    try:
        yield service, analyzer
    finally:
        service.close()


def test_a_sequence_ended_by_an_empty_request_gives_its_decoder_back(clips):
    """A camera that disconnects has no picture left to send: a last request with END and no access
    units flushes and closes its stream, so the instance's decoder goes to the next camera at once
    rather than after the idle timeout."""
    units = clips["h264"]
    with camera_service() as (service, _):
        service.step([CameraRequest(1, units[:1], None, True, False), CameraRequest(2, units[:1], None, True, False)])
        [ended] = service.step([CameraRequest(1, [], None, False, True)])
        assert ended.status == "decoding" and ended.stream_frames == 1
        [third] = service.step([CameraRequest(3, units[:1], None, True, False)])  # MAX_DECODERS is 2
        assert third.frame_indices == [0]
        [refused] = service.step([CameraRequest(4, [], None, True, True)])
        assert isinstance(refused, ValueError) and "at least one access unit" in str(refused)


def test_a_failed_last_request_still_gives_the_decoder_back(clips):
    units = clips["h264"]
    with camera_service() as (service, _):
        service.step([CameraRequest(1, units[:1], None, True, False), CameraRequest(2, units[:1], None, True, False)])
        [failed] = service.step([CameraRequest(1, units[1:2], "hevc", False, True)])
        assert isinstance(failed, ValueError) and "needs a new sequence" in str(failed)
        [third] = service.step([CameraRequest(3, units[:1], None, True, False)])
        assert third.frame_indices == [0]


def test_the_lane_of_a_stream_that_idled_out_is_let_go(clips):
    now = [0.0]
    units = clips["h264"]
    with camera_service(clock=lambda: now[0]) as (service, _):
        service.step([CameraRequest(1, units[:1], None, True, False)])
        now[0] = 61.0  # stream 1 falls silent past the idle timeout
        service.step([CameraRequest(2, units[:1], None, True, False)])
        assert list(service.streams.streams) == [2]
        assert sorted(service._lanes) == [2]


def test_a_step_counts_its_requests_rounds_and_phases(clips):
    units = clips["h264"]
    with camera_service() as (service, analyzer):
        service.step([CameraRequest(1, units[:1], None, True, False), CameraRequest(2, units[:3], None, True, False)])
        results = service.step([CameraRequest(1, units[1:3], None, False, False)])
    counters = service.counters
    assert counters.requests == 3 and counters.frames == 6
    # An analysis round takes what was decoded by then: the first step's two requests in one round or two.
    assert counters.steps in (2, 3)
    # Stream 2's three pictures are analysed one after another, stream 1's two of the second step too,
    # and stream 1's first beside stream 2's first or apart.
    assert analyzer.times.rounds in (5, 6) and analyzer.times.classified >= 2  # every START is classified
    # Both steps decoded and analysed pictures, so both phases were counted (they stay 0.0 unless added up).
    assert counters.decode_s > 0 and counters.analyze_s > 0 and counters.respond_s > 0
    assert [f.frame_index for f in results[0].frames] == [1, 2]
    assert all(f.tiles.device.type == "cpu" and f.indices.device.type == "cpu" for f in results[0].frames)


def test_every_answered_request_is_counted_once_in_each_phase_and_the_phases_add_up(clips):
    units = clips["h264"]
    with camera_service() as (service, _):
        service.step([CameraRequest(1, units[:1], None, True, False), CameraRequest(2, units[:3], None, True, False)])
        # A failed request is answered too, through the same queue: it is counted like the others.
        service.step([CameraRequest(1, units[1:3], None, False, False), CameraRequest(2, [], None, False, False)])
    phases = service.counters.requests_by_phase
    for phase in RequestPhases.PHASES:
        buckets = phases.cumulative(phase)
        assert buckets[-1] == 4, (phase, buckets)
        assert buckets == sorted(buckets), (phase, buckets)  # cumulative: never falls
    # The phases are consecutive stretches of each request's time in the model, so they add up to it.
    parts = sum(phases.sums[phase] for phase in RequestPhases.PHASES if phase != "total")
    assert phases.sums["total"] > 0 and parts == pytest.approx(phases.sums["total"], rel=1e-9)


def test_request_phase_buckets_are_prometheus_le_buckets():
    phases = RequestPhases(bounds=(0.01, 0.033, 0.1))
    for seconds in (0.005, 0.01, 0.02, 0.033, 0.05, 0.5):
        phases.observe("decode", seconds)
    # At or under each bound (a value on a bound is in its bucket), then every one under +Inf.
    assert phases.cumulative("decode") == [2, 4, 5, 6]
    assert phases.cumulative("total") == [0, 0, 0, 0]


class HeldDecoder(PyAVDecoder):
    """PyAV's decoder that waits for `release` before each access unit of the cameras in `held`."""

    def __init__(self, codec: str, release: threading.Event):
        super().__init__(codec)
        self.release = release

    def decode(self, access_unit: bytes):
        assert self.release.wait(timeout=60), "the test never let the held camera go"
        return super().decode(access_unit)


class Answers:
    def __init__(self):
        self.got: list[tuple[int, object]] = []
        self.lock = threading.Lock()

    def to(self, stream: int):
        def reply(result):
            with self.lock:
                self.got.append((stream, result))
        return reply

    def of(self, stream: int) -> list:
        with self.lock:
            return [result for s, result in self.got if s == stream]


def camera_2_answered_while_camera_1_is_held(service, answers, units, camera_1_held, release):
    """Camera 1 starts and is held (`camera_1_held` says when); camera 2's first two requests are
    answered meanwhile, camera 1's not; then camera 1 is let go. Camera 1's answer."""
    service.submit(CameraRequest(1, units[:1], None, True, False), answers.to(1))
    wait_for(camera_1_held)
    service.submit(CameraRequest(2, units[:1], None, True, False), answers.to(2))
    service.submit(CameraRequest(2, units[1:2], None, False, False), answers.to(2))
    wait_for(lambda: len(answers.of(2)) == 2)
    assert answers.of(1) == []
    assert [r.frame_indices for r in answers.of(2)] == [[0], [1]]
    release.set()
    wait_for(lambda: len(answers.of(1)) == 1)
    return answers.of(1)[0]


def test_a_camera_slow_to_decode_holds_back_no_other_camera(clips):
    """Each request decodes on its own camera's lane as it comes: a camera whose decoding stalls
    leaves the others answered (a batch decoded together would wait for its slowest camera)."""
    release, made = threading.Event(), []

    def make_decoder(codec):
        # The first camera's session stalls until released; the second's decodes at once.
        decoder = HeldDecoder(codec, release) if not made else PyAVDecoder(codec)
        made.append(decoder)
        return decoder

    answers, units = Answers(), clips["h264"]
    with camera_service(make_decoder, decode_threads=2) as (service, _):
        try:
            # The held session is camera 1's.
            held = camera_2_answered_while_camera_1_is_held(service, answers, units, lambda: len(made) == 1, release)
            assert held.frame_indices == [0]
        finally:
            release.set()


@pytest.mark.parametrize("analysis_threads", [1, 2])
def test_a_streams_answers_keep_its_order_failures_included(clips, analysis_threads):
    """A request that fails before it decodes (unreadable inputs) is answered after the stream's
    earlier requests, not ahead of them: a client matching answers in order gets the right ones."""
    release = threading.Event()
    answers, units = Answers(), clips["h264"]
    with camera_service(lambda codec: HeldDecoder(codec, release), decode_threads=2,
                        analysis_threads=analysis_threads) as (service, _):
        try:
            service.submit(CameraRequest(1, units[:1], None, True, False), answers.to(1))
            service.fail(1, ValueError("unknown codec 'vp9'"), answers.to(1))
            service.submit(CameraRequest(1, units[1:2], None, False, False), answers.to(1))
            release.set()
            wait_for(lambda: len(answers.of(1)) == 3)
            first, failed, third = answers.of(1)
            assert first.frame_indices == [0] and third.frame_indices == [1]
            assert isinstance(failed, ValueError) and "unknown codec" in str(failed)
        finally:
            release.set()


def test_a_camera_streams_h264_through_the_gateway(camera_server, clips, tmp_path):
    """The README's camera service: one bidirectional stream through the gateway, a sequence on it."""
    units = clips["h264"][:12]
    answers: queue.Queue = queue.Queue()
    with GatewayProcess([camera_server.grpc_url], tmp_path / "gateway.log") as gateway:
        with grpcclient.InferenceServerClient(gateway.url) as through_gateway:
            through_gateway.start_stream(callback=lambda result, error: answers.put((result, error)))
            try:
                for i, unit in enumerate(units):
                    through_gateway.async_stream_infer(
                        MODEL, [units_input([unit]), codec_input("h264")],
                        sequence_id=51, sequence_start=i == 0, sequence_end=i == len(units) - 1,
                    )
                got = [answers.get(timeout=120) for _ in units]
            finally:
                through_gateway.stop_stream()
    assert [error for _, error in got] == [None] * len(units)
    results = [outputs(result) for result, _ in got]
    assert [i for r in results for i in r["index"]] == list(range(len(units)))
    np.testing.assert_allclose(
        [m for r in results for m in r["motion"]], offline_motion("h264", units), rtol=1e-5, atol=1e-4
    )


class HeldPipeline(ImagePipeline):
    """The real pipeline, whose first classification says it began and then waits for `release`."""

    def __init__(self, release: threading.Event):
        super().__init__(Classifier(ClassifierSettings(seed=0)), k=5)
        self.release, self.began = release, threading.Event()
        self._lock = threading.Lock()
        self._calls = 0

    def classify_pixels(self, pixels):
        with self._lock:
            self._calls += 1
            first = self._calls == 1
        if first:
            self.began.set()
            assert self.release.wait(timeout=60), "the test never let the held classification go"
        return super().classify_pixels(pixels)


def test_a_shard_waiting_on_the_classifier_holds_back_no_camera_of_another_shard(clips):
    """With two analysis threads, camera 1's first picture held in the classifier leaves camera 2
    (the other shard) answered; with one thread camera 2's pictures would wait behind that round."""
    release = threading.Event()
    pipeline = HeldPipeline(release)
    answers, units = Answers(), clips["h264"]
    with camera_service(decode_threads=2, analysis_threads=2, pipeline=pipeline) as (service, _):
        try:
            assert service._shard(1) != service._shard(2)
            # Camera 1's START is in the classifier, held there.
            held = camera_2_answered_while_camera_1_is_held(service, answers, units, pipeline.began.is_set, release)
            assert held.frame_indices == [0] and held.frames[0].classified
        finally:
            release.set()


def test_cameras_over_two_shards_get_the_analysis_of_one(clips):
    """Sharding changes which thread analyses a camera, not what it gets: two cameras' clips over
    two shards give each the offline analysis of its clip."""
    units = clips["h264"]
    with camera_service(analysis_threads=2) as (service, _):
        results = {1: [], 2: []}
        for index, part in enumerate(chunks(units)):
            requests = [CameraRequest(stream, part, None, index == 0, False) for stream in (1, 2)]
            for stream, result in zip((1, 2), service.step(requests)):
                results[stream] += result.frames
    offline = offline_analysis("h264", units)
    for stream in (1, 2):
        np.testing.assert_allclose([f.motion for f in results[stream]], [f.motion for f in offline], rtol=1e-5, atol=1e-4)
        assert [f.classified for f in results[stream]] == [f.classified for f in offline]


def test_analysis_threads_must_be_one_or_more():
    analyzer = CameraAnalyzer(ImagePipeline(Classifier(ClassifierSettings(seed=0)), k=5), VideoSettings())
    with pytest.raises(ValueError, match="ANALYSIS_THREADS"):
        CameraService(CameraStreams(PyAVDecoder, max_decoders=2, idle_timeout_s=60), analyzer, "h264", analysis_threads=0)
