"""Compressed camera streams: one decoder session per sequence, then `video_pipeline`'s analysis.

A request carries one or more encoded access units of one camera (Triton correlation id). The
camera's `CameraStream` owns its decoder; the pictures decoded from all requests of a batch go
through `CameraAnalyzer` (models.video's per-stream motion, scene change and classification, on
the luma plane) together. What one camera sends only touches its own stream:

* a sequence that starts between keyframes skips access units until the next keyframe and says so
  (`waiting_for_keyframe`), instead of decoding garbage;
* a corrupt access unit fails its request (`CorruptAccessUnit`, a ValueError), and the stream gets
  a fresh decoder that waits for the next keyframe;
* `MAX_DECODERS` bounds the sessions of an instance: a new camera beyond it is refused
  (`DecoderLimit`) rather than slowing every camera already admitted; streams that end, or go
  silent for the idle timeout (a sequence Triton dropped), give their session back.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import torch

from kernels.yuv import i420_to_tensor, nv12_to_tensor
from models.classifier import INPUT_SIZE
from models.video import FrameIn, FrameResult, StreamError, VideoAnalyzer, keep_on_host
from models.video_decode import CorruptAccessUnit, Decoder, Picture, has_picture_data, is_keyframe, nal_types

DECODING = "decoding"
WAITING_FOR_KEYFRAME = "waiting_for_keyframe"


class DecoderLimit(Exception):
    """The instance holds MAX_DECODERS sessions: a new camera has to go elsewhere or wait."""


@dataclass
class CameraRequest:
    stream: int  # the sequence's correlation id
    access_units: list[bytes]
    codec: str | None  # FFmpeg decoder name; None: the model's default
    start: bool
    end: bool


@dataclass
class CameraFrameIn(FrameIn):
    picture: Picture


@dataclass
class CameraResult:
    status: str
    decode_ms: float
    stream_frames: int  # pictures this sequence has decoded so far
    frame_indices: list[int]
    frames: list[FrameResult]


@dataclass
class CameraStream:
    codec: str
    decoder: Decoder
    waiting_for_keyframe: bool = True
    restart_analysis: bool = True  # the next picture starts the motion analysis afresh
    frames: int = 0
    decode_s: float = 0.0
    shape: tuple[int, int] | None = None
    last_seen: float = 0.0


@dataclass
class Decoded:
    status: str
    pictures: list[Picture]
    decode_ms: float


@dataclass
class CameraCounters:
    """Totals since the instance started, for the model's metrics, and where its time went."""

    rejected: int = 0
    corrupt: int = 0
    frames: int = 0
    steps: int = 0  # executions (batches of requests)
    requests: int = 0
    decode_s: float = 0.0  # opening sessions and decoding, all streams of a batch together
    analyze_s: float = 0.0  # the analysis and classification, until their figures are on the host
    other_s: float = 0.0  # the rest of a step: idle streams, frames and results put together
    parse_s: float = 0.0  # reading the requests (counted by the serving model, not by the step)
    respond_s: float = 0.0  # building the responses (likewise)

    PHASES = ("parse", "decode", "analyze", "other", "respond")


class CameraStreams:
    """The decoder sessions of one model instance, by correlation id."""

    def __init__(
        self, make_decoder: Callable[[str], Decoder], max_decoders: int, idle_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_decoders < 1:
            raise ValueError(f"MAX_DECODERS must be >= 1, got {max_decoders}")
        self.make_decoder = make_decoder
        self.max_decoders = max_decoders
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self.streams: dict[int, CameraStream] = {}
        self.warm: dict[str, list[Decoder]] = {}

    def prepare(self, codec: str, count: int, keyframe: bytes) -> None:
        """`count` sessions that have each decoded `keyframe`, for the cameras to come. NVDEC makes
        a session's decoder when the first sequence header arrives (70 ms on an H200, 240 ms while
        other instances make theirs), not when the session is created; a session that has decoded
        a keyframe of a camera's size only checks the new camera's sequence header against it.
        Used up as cameras start, not refilled. The keyframe's picture must come out at once: one
        the session held back would reach the first camera given it."""
        pool = self.warm.setdefault(codec, [])
        while len(pool) < min(count, self.max_decoders):
            decoder = self.make_decoder(codec)
            if len(decoder.decode(keyframe)) != 1:
                decoder.close()
                raise ValueError("WARM_DECODERS needs decoders that hand out each picture with its access unit "
                                 "(NVDEC_LATENCY low): this one held the warm-up keyframe back")
            pool.append(decoder)

    def open(self, stream: int, codec: str) -> CameraStream:
        """A fresh session for a sequence's START; a restarted id gives its old session back first."""
        self.close(stream)
        self.drop_idle()
        if len(self.streams) >= self.max_decoders:
            raise DecoderLimit(
                f"decoder limit reached: this instance decodes {self.max_decoders} camera streams "
                f"(MAX_DECODERS); stream {stream} was not admitted, retry later "
                "or on another instance"
            )
        pool = self.warm.get(codec)
        decoder = pool.pop() if pool else self.make_decoder(codec)
        session = self.streams[stream] = CameraStream(codec, decoder, last_seen=self.clock())
        return session

    def get(self, stream: int) -> CameraStream:
        session = self.streams.get(stream)
        if session is None:
            raise StreamError(f"stream {stream} has no decoder: it ended, idled out, or never started")
        session.last_seen = self.clock()
        return session

    def close(self, stream: int) -> None:
        session = self.streams.pop(stream, None)
        if session is not None:
            session.decoder.close()

    def drop_idle(self) -> list[int]:
        cutoff = self.clock() - self.idle_timeout_s
        idle = [s for s, session in self.streams.items() if session.last_seen < cutoff]
        for stream in idle:
            self.close(stream)
        return idle

    def reset(self, session: CameraStream) -> None:
        """After a corrupt access unit: a new decoder, silent until the next keyframe."""
        session.decoder.close()
        session.decoder = self.make_decoder(session.codec)
        session.waiting_for_keyframe = True
        session.restart_analysis = True


def decode(session: CameraStream, access_units: list[bytes], end: bool) -> Decoded:
    """Decode one request's access units into the stream's session (flushing it at the end)."""
    parsed = [(au, nal_types(session.codec, au)) for au in access_units]
    started = time.perf_counter()
    pictures: list[Picture] = []
    for au, types in parsed:
        if session.waiting_for_keyframe and has_picture_data(session.codec, types):
            if not is_keyframe(session.codec, types):
                continue
            session.waiting_for_keyframe = False
        pictures.extend(session.decoder.decode(au))
    if end:
        pictures.extend(session.decoder.flush())
    elapsed = time.perf_counter() - started
    session.decode_s += elapsed
    status = WAITING_FOR_KEYFRAME if session.waiting_for_keyframe else DECODING
    return Decoded(status, pictures, elapsed * 1e3)


class CameraAnalyzer(VideoAnalyzer):
    """VideoAnalyzer on luma planes; the classifier gets colour from the pictures' own planes."""

    def _classify(self, chosen) -> None:
        if not chosen:
            return
        keep_on_host(chosen, self.pipeline.classify_pixels(pictures_to_pixels([m.item.picture for m in chosen])))


def pictures_to_pixels(pictures: list[Picture]) -> torch.Tensor:
    """Decoded 4:2:0 pictures -> the classifier's normalized NCHW input, one kernel call per kind."""
    rows: list[torch.Tensor | None] = [None] * len(pictures)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pictures):
        groups.setdefault((p.uv is None, p.shape, p.standard, p.full_range), []).append(i)
    for (planar, _, standard, full_range), members in groups.items():
        batch = [pictures[i] for i in members]
        luma = torch.stack([p.luma for p in batch])
        options = dict(standard=standard, full_range=full_range)
        if planar:
            u, v = torch.stack([p.u for p in batch]), torch.stack([p.v for p in batch])
            pixels = i420_to_tensor(luma, u, v, INPUT_SIZE, **options)
        else:
            pixels = nv12_to_tensor(luma, torch.stack([p.uv for p in batch]), INPUT_SIZE, **options)
        for row, i in enumerate(members):
            rows[i] = pixels[row]
    return torch.stack(rows)


def luma_frame(picture: Picture) -> torch.Tensor:
    """The luma plane seen as (H, W, 3) without a copy: the temporal kernels read three channels,
    and three equal channels give the luma plane's own motion, tile and background figures."""
    return picture.luma.unsqueeze(-1).expand(-1, -1, 3)


def warm_up_sizes(value: str) -> list[tuple[int, int]]:
    """WARMUP "1920x1080,1280x720" (width x height, as cameras are named) -> [(1080, 1920), (720, 1280)]."""
    sizes = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        width, sep, height = part.partition("x")
        if not (sep and width.isdigit() and height.isdigit()):
            raise ValueError(f"WARMUP must be sizes like 1920x1080, comma-separated, got {value!r}")
        sizes.append((int(height), int(width)))
    return sizes


# Triton's correlation ids are unsigned: no camera's stream has this id.
_WARM_UP_STREAM = -1


def blank_picture(height: int, width: int, device: torch.device) -> Picture:
    """A grey 4:2:0 picture laid out as that device's decoder hands them out (NV12 from NVDEC on a
    GPU, I420 from PyAV on the CPU)."""
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 pictures need an even width and height, got {width}x{height}")
    luma = torch.full((height, width), 128, dtype=torch.uint8, device=device)
    chroma = (height // 2, width // 2)
    if device.type == "cuda":
        return Picture(luma=luma, uv=torch.full((*chroma, 2), 128, dtype=torch.uint8, device=device))
    return Picture(luma=luma, u=torch.full(chroma, 128, dtype=torch.uint8), v=torch.full(chroma, 128, dtype=torch.uint8))


class CameraService:
    """One batch of camera requests -> one CameraResult (or the exception) per request."""

    def __init__(self, streams: CameraStreams, analyzer: CameraAnalyzer, default_codec: str, decode_threads: int = 1):
        self.streams = streams
        self.analyzer = analyzer
        self.default_codec = default_codec
        self.counters = CameraCounters()
        self._pool = ThreadPoolExecutor(decode_threads) if decode_threads > 1 else None

    def step(self, requests: list[CameraRequest]) -> list[CameraResult | Exception]:
        """Results with their per-frame figures on the host, so building a response waits for nothing."""
        for stream in self.streams.drop_idle():
            self.analyzer.streams.pop(stream, None)
        results: list = [None] * len(requests)
        began = time.perf_counter()
        decoded = self._decode_all(requests, results)
        decoded_at = time.perf_counter()
        frames, owners = self._frames(requests, decoded)
        framed_at = time.perf_counter()
        analyzed = self.analyzer.step(frames) if frames else []
        analyzed_at = time.perf_counter()
        per_request: dict[int, list] = {}
        for (position, index), result in zip(owners, analyzed):
            per_request.setdefault(position, []).append((index, result))
        for position, (session, outcome) in decoded.items():
            entries = per_request.get(position, [])
            failed = next((r for _, r in entries if isinstance(r, Exception)), None)
            results[position] = failed or CameraResult(
                status=outcome.status,
                decode_ms=outcome.decode_ms,
                stream_frames=session.frames,
                frame_indices=[i for i, _ in entries],
                frames=[r for _, r in entries],
            )
        for request in requests:
            if request.end:
                self.streams.close(request.stream)
                self.analyzer.streams.pop(request.stream, None)
        counters = self.counters
        counters.steps += 1
        counters.requests += len(requests)
        counters.decode_s += decoded_at - began
        counters.analyze_s += analyzed_at - framed_at
        counters.other_s += (framed_at - decoded_at) + (time.perf_counter() - analyzed_at)
        return results

    def _decode_all(self, requests, results) -> dict[int, tuple[CameraStream, Decoded]]:
        """Sessions first (in order: a START must exist before the requests after it), then the
        decoding, each stream's requests in order, different streams in parallel."""
        by_stream: dict[int, list[tuple[int, CameraRequest, CameraStream]]] = {}
        for position, request in enumerate(requests):
            try:
                session = self._session(request)
            except (ValueError, DecoderLimit) as exc:
                results[position] = exc
                continue
            by_stream.setdefault(request.stream, []).append((position, request, session))
        work = list(by_stream.values())
        outcomes = self._pool.map(self._decode_stream, work) if self._pool else map(self._decode_stream, work)
        decoded = {}
        for entries in outcomes:
            for position, session, outcome in entries:
                if isinstance(outcome, Exception):
                    results[position] = outcome
                else:
                    decoded[position] = (session, outcome)
        return dict(sorted(decoded.items()))

    def _session(self, request: CameraRequest) -> CameraStream:
        if not request.access_units:
            raise ValueError(f"stream {request.stream}: send at least one access unit in ACCESS_UNITS")
        if request.start:
            try:
                return self.streams.open(request.stream, request.codec or self.default_codec)
            except DecoderLimit:
                self.counters.rejected += 1
                raise
        session = self.streams.get(request.stream)
        if request.codec is not None and request.codec != session.codec:
            raise ValueError(f"stream {request.stream} started as {session.codec}; CODEC {request.codec} needs a new sequence")
        return session

    def _decode_stream(self, entries):
        out = []
        for position, request, session in entries:
            try:
                out.append((position, session, decode(session, request.access_units, request.end)))
            except CorruptAccessUnit as exc:
                self.counters.corrupt += 1
                self.streams.reset(session)
                out.append((position, session, CorruptAccessUnit(
                    f"stream {request.stream}: {exc}; the stream resumes at its next keyframe")))
        return out

    def _frames(self, requests, decoded):
        """Every decoded picture as a FrameIn, with (request position, frame index) beside it."""
        frames, owners = [], []
        for position, (session, outcome) in decoded.items():
            request = requests[position]
            for n, picture in enumerate(outcome.pictures):
                restart = session.restart_analysis or picture.shape != session.shape
                session.restart_analysis, session.shape = False, picture.shape
                frames.append(CameraFrameIn(
                    stream=request.stream, frame=luma_frame(picture), start=restart,
                    end=request.end and n == len(outcome.pictures) - 1, picture=picture,
                ))
                owners.append((position, session.frames))
                session.frames += 1
                self.counters.frames += 1
        return frames, owners

    def warm_up(self, height: int, width: int, device: torch.device) -> None:
        """Two pictures of one stream through the analysis and the classifier, so the kernels are
        compiled and tuned for pictures of this size before the first camera's arrive."""
        picture = blank_picture(height, width, device)
        for n in range(2):
            frame = CameraFrameIn(stream=_WARM_UP_STREAM, frame=luma_frame(picture), start=n == 0, end=n == 1,
                                  picture=picture)
            self.analyzer.step([frame])
        self.analyzer.streams.pop(_WARM_UP_STREAM, None)

    def close(self) -> None:
        for stream in list(self.streams.streams):
            self.streams.close(stream)
        for pool in self.streams.warm.values():
            while pool:
                pool.pop().close()
        self.analyzer.streams.clear()
        if self._pool:
            self._pool.shutdown(wait=True)
