"""Compressed camera streams: one decoder session per sequence, then `video_pipeline`'s analysis.

A request carries one or more encoded access units of one camera (Triton correlation id). The
camera's `CameraStream` owns its decoder; `CameraService` decodes each request on its camera's
lane as soon as it comes, and the pictures decoded meanwhile from every camera go through
`CameraAnalyzer` (models.video's per-stream motion, scene change and classification, on the luma
plane) together. What one camera sends only touches its own stream:

* a sequence that starts between keyframes skips access units until the next keyframe and says so
  (`waiting_for_keyframe`), instead of decoding garbage;
* a corrupt access unit fails its request (`CorruptAccessUnit`, a ValueError), and the stream gets
  a fresh decoder that waits for the next keyframe;
* `MAX_DECODERS` bounds the sessions of an instance: a new camera beyond it is refused
  (`DecoderLimit`) rather than slowing every camera already admitted; streams that end, or go
  silent for the idle timeout (a sequence Triton dropped), give their session back.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import queue
import threading
import time
from collections import deque
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
    received: float = 0.0  # perf_counter when the model took it (CameraService.submit sets it)


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


# Upper bounds (seconds) of the buckets a request's phases are counted in: fine around a 30 FPS
# camera's 33 ms period, where whether a frame is late is decided.
PHASE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.033, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0)


class RequestPhases:
    """How long each request spent in each phase inside the model, as histogram buckets, so the tail
    of every phase can be read (a mean of the step counters cannot say where a late frame's time went):

    * lane_wait: from the model taking the request to its decode beginning (behind its camera's
      earlier requests, or waiting for a decode thread);
    * decode: its session and its access units through the decoder, pictures numbered;
    * analysis_wait: decoded, waiting for the analysis thread to take it into a round;
    * analyze: its round's analysis, until the figures are on the host;
    * respond: from the round's figures to this request's answer sent (the answers before it in the
      round included);
    * total: from the model taking it to its answer sent.

    Counted by the analysis threads under the service's lock."""

    PHASES = ("lane_wait", "decode", "analysis_wait", "analyze", "respond", "total")

    def __init__(self, bounds: tuple[float, ...] = PHASE_BUCKETS_S):
        self.bounds = bounds
        # Per phase: the requests in each bucket (not cumulative), the last above every bound.
        self.counts = {phase: [0] * (len(bounds) + 1) for phase in self.PHASES}
        self.sums = dict.fromkeys(self.PHASES, 0.0)

    def observe(self, phase: str, seconds: float) -> None:
        self.counts[phase][bisect.bisect_left(self.bounds, seconds)] += 1
        self.sums[phase] += seconds

    def cumulative(self, phase: str) -> list[int]:
        """Requests at or under each bound, then all of them (Prometheus' `le` buckets, +Inf last)."""
        return list(itertools.accumulate(self.counts[phase]))


@dataclass
class CameraCounters:
    """Totals since the instance started, for the model's metrics, and where its time went."""

    rejected: int = 0
    corrupt: int = 0
    frames: int = 0
    steps: int = 0  # analysis rounds
    requests: int = 0  # requests answered by those rounds
    decode_s: float = 0.0  # the lanes' time on sessions and decoding, summed over the decode threads
    analyze_s: float = 0.0  # the rounds' analysis and classification, until their figures are on the host
    parse_s: float = 0.0  # reading the requests (counted by the serving model)
    respond_s: float = 0.0  # building and sending the answers, on the analysis thread

    PHASES = ("parse", "decode", "analyze", "respond")
    requests_by_phase: RequestPhases = field(default_factory=RequestPhases)


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


Reply = Callable[["CameraResult | Exception"], None]


@dataclass
class Prepared:
    """A request decoded and its pictures numbered, or the exception that failed it: what the
    analysis takes, in each stream's order."""

    request: CameraRequest
    reply: Reply
    outcome: Decoded | Exception
    frames: list[CameraFrameIn] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    stream_frames: int = 0
    lane_began: float = 0.0  # perf_counter when its lane took it up
    queued: float = 0.0  # perf_counter when it went to the analysis queue


@dataclass
class Forget:
    """A stream whose analysis state can go: it idled out of its decoder."""

    stream: int


class Lane:
    """One camera's jobs, run one after another on a shared pool in the order they came, so a
    stream's access units decode in order while different cameras decode in parallel."""

    def __init__(self, pool: ThreadPoolExecutor):
        self._pool = pool
        self._jobs: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._running = False

    def put(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._running:
                return
            self._running = True
        self._pool.submit(self._drain)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._jobs

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                job = self._jobs.popleft()
            job()


_STOP = object()


class CameraService:
    """Camera requests in, one CameraResult (or the exception) per request out, through a pipeline
    that never waits for a batch: each request decodes on its camera's `Lane` as soon as it comes
    (NVDEC stays busy while the analysis of earlier pictures runs), and an analysis thread takes
    every request decoded so far, runs their pictures through the kernels together and answers
    them. Answers leave in each stream's order, failures included, since a stream's requests pass
    its lane and then its analysis queue in order.

    `analysis_threads` > 1 splits the cameras into that many shards (by stream id), each with its
    own analysis thread, queue and analyzer (its streams' state; the classifier is shared): a round
    that waits on the classifier then holds back only its own shard's cameras, at the price of
    smaller rounds (more kernel launches per picture)."""

    def __init__(self, streams: CameraStreams, analyzer: CameraAnalyzer, default_codec: str, decode_threads: int = 1,
                 device: torch.device | None = None, max_analysis_frames: int = 64, analysis_threads: int = 1):
        if analysis_threads < 1:
            raise ValueError(f"ANALYSIS_THREADS must be >= 1, got {analysis_threads}")
        self.streams = streams
        self.analyzers = [analyzer] + [CameraAnalyzer(analyzer.pipeline, analyzer.settings)
                                       for _ in range(analysis_threads - 1)]
        self.default_codec = default_codec
        self.counters = CameraCounters()
        self.max_analysis_frames = max_analysis_frames
        self.publish: Callable[[], None] = lambda: None  # called after each analysis round (metrics)
        self._device = device
        self._lock = threading.Lock()  # the sessions, the lanes and the counters
        self._publish_lock = threading.Lock()  # one analysis thread at a time publishes
        self._lanes: dict[int, Lane] = {}
        self._pool = ThreadPoolExecutor(max(decode_threads, 1), thread_name_prefix="camera-decode",
                                        initializer=self._use_device)
        self._shards: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in self.analyzers]
        self._analysts = [threading.Thread(target=self._analysis_loop, args=(shard,), name=f"camera-analysis-{shard}",
                                           daemon=True) for shard in range(len(self.analyzers))]
        for analyst in self._analysts:
            analyst.start()

    def _shard(self, stream: int) -> int:
        return hash(stream) % len(self._shards)

    def submit(self, request: CameraRequest, reply: Reply) -> None:
        """Queue a request on its camera's lane; `reply` gets its result from the analysis thread."""
        request.received = request.received or time.perf_counter()
        self._on_lane(request.stream, lambda: self._prepare(request, reply))

    def fail(self, stream: int, exc: Exception, reply: Reply) -> None:
        """Answer a request that could not be read with `exc`, after the stream's earlier requests."""
        request = CameraRequest(stream, [], None, False, False, received=time.perf_counter())
        self._on_lane(stream, lambda: self._queue(Prepared(request, reply, exc)))

    def step(self, requests: list[CameraRequest], timeout_s: float = 120.0) -> list[CameraResult | Exception]:
        """Submit `requests` and wait for their results (the benchmarks' and tests' way in)."""
        results: list = [None] * len(requests)
        done = threading.Semaphore(0)

        def keep(position: int, result) -> None:
            results[position] = result
            done.release()

        for position, request in enumerate(requests):
            self.submit(request, lambda result, position=position: keep(position, result))
        for _ in requests:
            if not done.acquire(timeout=timeout_s):
                raise TimeoutError(f"the camera pipeline did not answer within {timeout_s} s")
        return results

    def _use_device(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.set_device(self._device)

    def _on_lane(self, stream: int, job: Callable[[], None]) -> None:
        with self._lock:
            lane = self._lanes.get(stream)
            if lane is None:
                lane = self._lanes[stream] = Lane(self._pool)
            lane.put(job)

    def _prepare(self, request: CameraRequest, reply: Reply) -> None:
        """On the camera's lane: its session, its decoding, its pictures numbered."""
        began = time.perf_counter()
        try:
            session = self._session(request)
            outcome = self._decode(request, session)
        except Exception as exc:  # one request's failure, whatever it is, is that request's answer
            prepared = Prepared(request, reply, exc, lane_began=began)
        else:
            prepared = Prepared(request, reply, outcome, lane_began=began)
            if isinstance(outcome, Decoded):
                self._number(prepared, session)
            with self._lock:
                self.counters.decode_s += time.perf_counter() - began
        # Queued before the lane can go: a new sequence on the same id then gets a new lane whose
        # answers could otherwise reach the analysis ahead of this last one.
        self._queue(prepared)
        if request.end:  # failed or not, the sequence is over: its decoder goes back now
            self._end(request.stream)

    def _queue(self, prepared: Prepared) -> None:
        prepared.queued = time.perf_counter()
        prepared.lane_began = prepared.lane_began or prepared.queued
        self._shards[self._shard(prepared.request.stream)].put(prepared)

    def _session(self, request: CameraRequest) -> CameraStream:
        # A last request may come without access units (the camera has left): it flushes the stream.
        if not request.access_units and (request.start or not request.end):
            raise ValueError(f"stream {request.stream}: send at least one access unit in ACCESS_UNITS")
        with self._lock:
            for stream in self.streams.drop_idle():
                self._forget(stream)
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

    def _decode(self, request: CameraRequest, session: CameraStream) -> Decoded | Exception:
        try:
            return decode(session, request.access_units, request.end)
        except CorruptAccessUnit as exc:
            with self._lock:
                self.counters.corrupt += 1
            self.streams.reset(session)
            return CorruptAccessUnit(f"stream {request.stream}: {exc}; the stream resumes at its next keyframe")

    def _number(self, prepared: Prepared, session: CameraStream) -> None:
        """Every decoded picture as a FrameIn, numbered in its stream."""
        request, pictures = prepared.request, prepared.outcome.pictures
        for n, picture in enumerate(pictures):
            restart = session.restart_analysis or picture.shape != session.shape
            session.restart_analysis, session.shape = False, picture.shape
            prepared.frames.append(CameraFrameIn(
                stream=request.stream, frame=luma_frame(picture), start=restart,
                end=request.end and n == len(pictures) - 1, picture=picture,
            ))
            prepared.indices.append(session.frames)
            session.frames += 1
        prepared.stream_frames = session.frames
        with self._lock:
            self.counters.frames += len(pictures)

    def _end(self, stream: int) -> None:
        """A sequence's last request: its session goes back, and its lane if nothing waits on it."""
        with self._lock:
            self.streams.close(stream)
            self._drop_lane(stream)

    def _forget(self, stream: int) -> None:
        """A stream that idled out of its session (under the lock): its analysis state and lane go too."""
        self._shards[self._shard(stream)].put(Forget(stream))
        self._drop_lane(stream)

    def _drop_lane(self, stream: int) -> None:
        lane = self._lanes.get(stream)
        if lane is not None and lane.idle:
            del self._lanes[stream]

    def _analysis_loop(self, shard: int) -> None:
        self._use_device()
        analysis, analyzer = self._shards[shard], self.analyzers[shard]
        while True:
            batch, frames = [], 0
            item = analysis.get()
            while item is not _STOP:
                batch.append(item)
                if isinstance(item, Prepared):
                    frames += len(item.frames)
                if frames >= self.max_analysis_frames:
                    break
                try:
                    item = analysis.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._analyze(analyzer, batch)
            if item is _STOP:
                return

    def _analyze(self, analyzer: CameraAnalyzer, batch: list) -> None:
        """One round of a shard: the pictures of every request in `batch` through its analyzer
        together, then each request answered (in the order they came)."""
        began = time.perf_counter()
        prepared = [item for item in batch if isinstance(item, Prepared)]
        for item in batch:
            if isinstance(item, Forget):
                analyzer.streams.pop(item.stream, None)
        frames = [frame for item in prepared for frame in item.frames]
        try:
            analyzed = analyzer.step(frames) if frames else []
        except Exception as exc:  # a failure of the round itself: every request still gets an answer
            analyzed = [exc] * len(frames)
        analyzed_at = time.perf_counter()
        at, answered = 0, []
        for item in prepared:
            mine, at = analyzed[at : at + len(item.frames)], at + len(item.frames)
            self._answer(analyzer, item, mine)
            answered.append(time.perf_counter())
        counters = self.counters
        with self._lock:
            counters.steps += 1
            counters.requests += len(prepared)
            counters.analyze_s += analyzed_at - began
            counters.respond_s += time.perf_counter() - analyzed_at
            for item, answered_at in zip(prepared, answered):
                self._count_phases(item, began, analyzed_at, answered_at)
        with self._publish_lock:
            self.publish()

    def _count_phases(self, item: Prepared, round_began: float, analyzed_at: float, answered: float) -> None:
        phases = self.counters.requests_by_phase
        received = item.request.received or item.lane_began
        phases.observe("lane_wait", item.lane_began - received)
        phases.observe("decode", item.queued - item.lane_began)
        phases.observe("analysis_wait", round_began - item.queued)
        phases.observe("analyze", analyzed_at - round_began)
        phases.observe("respond", answered - analyzed_at)
        phases.observe("total", answered - received)

    def _answer(self, analyzer: CameraAnalyzer, item: Prepared, analyzed: list) -> None:
        outcome = item.outcome
        if isinstance(outcome, Decoded):
            failed = next((r for r in analyzed if isinstance(r, Exception)), None)
            outcome = failed or CameraResult(
                status=outcome.status, decode_ms=outcome.decode_ms, stream_frames=item.stream_frames,
                frame_indices=item.indices, frames=analyzed,
            )
        if item.request.end:
            analyzer.streams.pop(item.request.stream, None)
        try:
            item.reply(outcome)
        except Exception:  # a reply that cannot go out (its client left) costs no other camera
            logging.getLogger(__name__).exception("answering camera stream %s failed", item.request.stream)

    def warm_up(self, height: int, width: int, device: torch.device) -> None:
        """Two pictures of one stream through the analysis and the classifier, so the kernels are
        compiled and tuned for pictures of this size before the first camera's arrive (the shards
        share the kernels and the classifier, so one shard's analyzer warms them all)."""
        picture = blank_picture(height, width, device)
        analyzer = self.analyzers[0]
        for n in range(2):
            frame = CameraFrameIn(stream=_WARM_UP_STREAM, frame=luma_frame(picture), start=n == 0, end=n == 1,
                                  picture=picture)
            analyzer.step([frame])
        analyzer.streams.pop(_WARM_UP_STREAM, None)

    def close(self) -> None:
        for analysis in self._shards:
            analysis.put(_STOP)
        for analyst in self._analysts:
            analyst.join()
        self._pool.shutdown(wait=True)
        for stream in list(self.streams.streams):
            self.streams.close(stream)
        for pool in self.streams.warm.values():
            while pool:
                pool.pop().close()
        for analyzer in self.analyzers:
            analyzer.streams.clear()
