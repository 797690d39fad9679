"""Triton side of the camera model: requests -> `CameraRequest`s, results -> tensors, metrics.

Imported only inside the Python-backend stub.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from models import triton_io
from models.camera import (
    CameraAnalyzer, CameraCounters, CameraRequest, CameraResult, CameraService, CameraStreams, DecoderLimit, RequestPhases,
    warm_up_sizes,
)
from models.pipeline import build_from_parameters
from models.video import settings_from_parameters
from models.video_decode import blank_keyframe, codec_name, decoder_factory

# The frame and step counters reach the metrics endpoint at most this often (seconds).
PUBLISH_INTERVAL_S = 1.0

INPUTS = [
    # config.pbtxt also sets allow_ragged_batch on it (auto-complete takes no other properties).
    {"name": "ACCESS_UNITS", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "CODEC", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
]


def outputs(k: int, grid: tuple[int, int]) -> list[dict]:
    """The model's outputs for top-`k` labels and a motion `grid`, as config.pbtxt declares them."""
    return [
        {"name": "STATUS", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "FRAMES_DECODED", "data_type": "TYPE_INT64", "dims": [1]},
        {"name": "DECODE_MS", "data_type": "TYPE_FP32", "dims": [1]},
        {"name": "STREAM_FRAMES", "data_type": "TYPE_INT64", "dims": [1]},
        {"name": "FRAME_INDEX", "data_type": "TYPE_INT64", "dims": [-1]},
        {"name": "MOTION", "data_type": "TYPE_FP32", "dims": [-1]},
        {"name": "MOTION_TILES", "data_type": "TYPE_FP32", "dims": [-1, *grid]},
        {"name": "SCENE_CHANGE", "data_type": "TYPE_BOOL", "dims": [-1]},
        {"name": "CLASSIFIED", "data_type": "TYPE_BOOL", "dims": [-1]},
        {"name": "LABELS", "data_type": "TYPE_STRING", "dims": [-1, k]},
        {"name": "SCORES", "data_type": "TYPE_FP32", "dims": [-1, k]},
    ]


def build_service(args: dict) -> tuple[CameraService, list[str], torch.device]:
    """The instance's camera service, class labels and device, from its config parameters."""
    config = triton_io.load_config(args)
    params = triton_io.parameters(config)
    device = triton_io.instance_device(args)
    pipeline, labels = build_from_parameters(params, lambda p: triton_io.model_file(args, p), device)
    settings = settings_from_parameters(params)
    sizes = warm_up_sizes(params.get("WARMUP", ""))
    # NVDEC sessions sized for the largest warm-up size: a camera up to it reconfigures a session.
    largest = max(sizes, key=lambda s: s[0] * s[1]) if sizes else None
    streams = CameraStreams(
        decoder_factory(params.get("DECODER", "auto"), device, low_latency=_nvdec_low_latency(params), max_size=largest),
        max_decoders=int(params.get("MAX_DECODERS", "16")),
        idle_timeout_s=settings.idle_timeout_s,
    )
    service = CameraService(
        streams, CameraAnalyzer(pipeline, settings), codec_name(params.get("CODEC", "h264")),
        decode_threads=int(params.get("DECODE_THREADS", "1")), device=device,
        analysis_threads=int(params.get("ANALYSIS_THREADS", "1")),
    )
    warm = int(params.get("WARM_DECODERS", "0"))
    if warm and not sizes:
        raise ValueError("WARM_DECODERS needs WARMUP: the picture size the sessions are made ready for")
    if warm:
        streams.prepare(service.default_codec, warm, blank_keyframe(service.default_codec, *sizes[0]))
    for height, width in sizes:
        service.warm_up(height, width, device)
    return service, labels, device


def _nvdec_low_latency(params: dict) -> bool:
    latency = params.get("NVDEC_LATENCY", "native")
    if latency not in ("native", "low"):
        raise ValueError(f"NVDEC_LATENCY must be native or low, got {latency!r}")
    return latency == "low"


def camera_request(request) -> CameraRequest:
    """One Triton request as a `CameraRequest`; an unknown CODEC is a ValueError."""
    codec = triton_io.input_bytes(request, "CODEC")
    return CameraRequest(
        stream=request.correlation_id(),
        access_units=triton_io.input_bytes(request, "ACCESS_UNITS") or [],
        codec=codec_name(codec[0].decode(errors="replace")) if codec else None,
        start=_flag(request, "START"),
        end=_flag(request, "END"),
    )


def _flag(request, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return bool(tensor is not None and tensor.as_numpy().reshape(-1)[0])


def result_tensors(result: CameraResult, labels: list[str], k: int, grid: tuple[int, int]) -> list:
    """One request's outputs, batch dimension 1; the per-frame ones have one row per picture.

    Built from host values (the analysis copies the figures off the device once per kernel round), as
    numpy arrays: nothing here waits on the GPU or hands device memory to Triton.
    """
    frames = result.frames
    n = len(frames)
    tiles = np.stack([f.tiles.numpy() for f in frames]).astype(np.float32) if frames else np.zeros((0, *grid), np.float32)
    scores = np.stack([f.scores.numpy() for f in frames]).astype(np.float32) if frames else np.zeros((0, k), np.float32)
    names = [[labels[i].encode() for i in f.indices.tolist()] for f in frames]
    return [
        triton_io.bytes_output("STATUS", [[result.status]]),
        _tensor("FRAMES_DECODED", np.array([[n]], np.int64)),
        _tensor("DECODE_MS", np.array([[result.decode_ms]], np.float32)),
        _tensor("STREAM_FRAMES", np.array([[result.stream_frames]], np.int64)),
        _tensor("FRAME_INDEX", np.array(result.frame_indices, np.int64).reshape(1, n)),
        _tensor("MOTION", np.array([f.motion for f in frames], np.float32).reshape(1, n)),
        _tensor("MOTION_TILES", tiles.reshape(1, n, *grid)),
        _tensor("SCENE_CHANGE", np.array([f.scene_change for f in frames], np.bool_).reshape(1, n)),
        _tensor("CLASSIFIED", np.array([f.classified for f in frames], np.bool_).reshape(1, n)),
        _tensor("LABELS", np.array(names, dtype=np.object_).reshape(1, n, k)),
        _tensor("SCORES", scores.reshape(1, n, k)),
    ]


def _tensor(name: str, value: np.ndarray):
    return pb_utils.Tensor(name, value)


def error_response(exc: Exception):
    """A failed request's response: UNAVAILABLE at the decoder limit, else `triton_io.error_response`."""
    if isinstance(exc, DecoderLimit):
        # The 2.51 Python backend has no RESOURCE_EXHAUSTED; UNAVAILABLE is the status that tells a
        # client (or a gateway) to try again later or elsewhere.
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.UNAVAILABLE))
    return triton_io.error_response(exc)


class CameraMetrics:
    """The instance's decoder sessions and refusals on Triton's metrics endpoint."""

    def __init__(self, args: dict):
        labels = {"model": args["model_name"], "instance": args["model_instance_name"]}
        gauge, counter = pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.COUNTER
        self._families = [
            pb_utils.MetricFamily("tritonfleet_camera_decoders", "Open decoder sessions (camera streams)", gauge),
            pb_utils.MetricFamily("tritonfleet_camera_rejected_total", "New camera streams refused at MAX_DECODERS", counter),
            pb_utils.MetricFamily("tritonfleet_camera_frames_decoded_total", "Pictures decoded", counter),
            pb_utils.MetricFamily("tritonfleet_camera_corrupt_access_units_total", "Access units refused as corrupt", counter),
        ]
        self.decoders, self.rejected, self.frames, self.corrupt = (f.Metric(labels=labels) for f in self._families)
        steps = pb_utils.MetricFamily("tritonfleet_camera_steps_total", "Analysis rounds of the camera model", counter)
        requests = pb_utils.MetricFamily("tritonfleet_camera_step_requests_total", "Requests answered by those rounds", counter)
        seconds = pb_utils.MetricFamily(
            "tritonfleet_camera_step_seconds_total",
            "Seconds in each phase: parse (reading the requests), decode (sessions and decoding, summed over the "
            "decode threads), analyze (until the figures are on the host), respond (building and sending the "
            "answers)", counter)
        self._families += [steps, requests, seconds]
        # (metric, CameraCounters field): refusals go out as they happen, the rest throttled.
        self._refusals = [(self.rejected, "rejected"), (self.corrupt, "corrupt")]
        self._throttled = [(self.frames, "frames"), (steps.Metric(labels=labels), "steps"),
                           (requests.Metric(labels=labels), "requests"),
                           *((seconds.Metric(labels={**labels, "phase": phase}), f"{phase}_s") for phase in CameraCounters.PHASES)]
        self._published = CameraCounters()
        self._decoders_published: int | None = None
        self._throttled_at = 0.0
        self._phases = RequestPhaseMetrics(labels, self._published.requests_by_phase.bounds)

    def publish(self, open_decoders: int, counters: CameraCounters) -> None:
        """Each metric call is a round trip to the server: sessions and refusals go out when they
        change, the frame and step counters at most once per PUBLISH_INTERVAL_S."""
        if open_decoders != self._decoders_published:
            self.decoders.set(open_decoders)
            self._decoders_published = open_decoders
        now = time.monotonic()
        due = now - self._throttled_at >= PUBLISH_INTERVAL_S
        counted = self._refusals + self._throttled if due else self._refusals
        if due:
            self._throttled_at = now
        for metric, name in counted:
            delta = getattr(counters, name) - getattr(self._published, name)
            if delta:
                metric.increment(delta)
                setattr(self._published, name, getattr(counters, name))
        if due:
            self._phases.publish(counters.requests_by_phase)


class RequestPhaseMetrics:
    """`RequestPhases` as a Prometheus histogram, `tritonfleet_camera_request_phase_seconds` with a
    `phase` label. The Python backend's own histogram takes one observation per call, a round trip to
    the server each (six a request); its counters take a sum, so the buckets, sum and count go out as
    counters, once per publish, and `histogram_quantile` reads them as any histogram's."""

    NAME = "tritonfleet_camera_request_phase_seconds"

    def __init__(self, labels: dict, bounds: tuple[float, ...]):
        counter = pb_utils.MetricFamily.COUNTER
        help_ = ("Requests by the seconds each spent in a phase inside the camera model: lane_wait, decode, "
                 "analysis_wait, analyze, respond, total")
        buckets = pb_utils.MetricFamily(f"{self.NAME}_bucket", help_, counter)
        sums = pb_utils.MetricFamily(f"{self.NAME}_sum", help_, counter)
        counts = pb_utils.MetricFamily(f"{self.NAME}_count", help_, counter)
        self._families = [buckets, sums, counts]
        bounds_text = [repr(float(b)) for b in bounds] + ["+Inf"]
        self._buckets = {phase: [buckets.Metric(labels={**labels, "phase": phase, "le": le}) for le in bounds_text]
                         for phase in RequestPhases.PHASES}
        self._sums = {phase: sums.Metric(labels={**labels, "phase": phase}) for phase in RequestPhases.PHASES}
        self._counts = {phase: counts.Metric(labels={**labels, "phase": phase}) for phase in RequestPhases.PHASES}
        self._published = RequestPhases(bounds)

    def publish(self, phases: RequestPhases) -> None:
        for phase in RequestPhases.PHASES:
            now, then = phases.cumulative(phase), self._published.cumulative(phase)
            for metric, count, published in zip(self._buckets[phase], now, then):
                if count != published:
                    metric.increment(count - published)
            if now[-1] != then[-1]:
                self._counts[phase].increment(now[-1] - then[-1])
                self._sums[phase].increment(phases.sums[phase] - self._published.sums[phase])
            self._published.counts[phase] = list(phases.counts[phase])
            self._published.sums[phase] = phases.sums[phase]
