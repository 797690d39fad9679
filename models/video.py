"""Per-camera-stream video analysis: motion on every frame, classification when it matters.

One `StreamState` per sequence (Triton correlation id) keeps the previous frame and a running
background. Each batch of frames, from any mix of streams, goes through `kernels.temporal_update`
in one call per frame size; frames whose motion passes a threshold, that change scene, start a
stream, or come `classify_every` frames after the last classification go through the image
pipeline together. A scene change is a frame far from the background (a cut, a camera moved), as
opposed to motion, which is change since the previous frame; the background then restarts from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from kernels.temporal import temporal_update
from models.pipeline import ImagePipeline, TopK


@dataclass(frozen=True)
class VideoSettings:
    motion_threshold: float = 6.0  # mean |frame - previous| in [0, 255] units
    scene_threshold: float = 40.0  # mean |frame - background| in [0, 255] units
    classify_every: int = 30  # frames; at 30 FPS, at least one classification a second
    background_alpha: float = 0.05
    grid: tuple[int, int] = (4, 4)
    idle_timeout_s: float = 60.0  # a stream silent this long is dropped (its client is gone)

    def __post_init__(self):
        if self.classify_every < 1:
            raise ValueError(f"classify_every must be >= 1, got {self.classify_every}")
        if not 0.0 < self.background_alpha <= 1.0:
            raise ValueError(f"background_alpha must be in (0, 1], got {self.background_alpha}")


@dataclass
class FrameIn:
    stream: int  # the sequence's correlation id
    frame: torch.Tensor  # (H, W, 3) uint8, on the analyzer's device
    start: bool
    end: bool


@dataclass
class FrameResult:
    frame_index: int
    motion: float
    tiles: torch.Tensor  # (gh, gw) float32
    scene_change: bool
    classified: bool
    indices: torch.Tensor  # (k,) int64, from the latest classification of this stream
    scores: torch.Tensor  # (k,) float32


@dataclass
class StreamState:
    prev: torch.Tensor
    background: torch.Tensor
    frame_index: int = 0
    since_classified: int = 0
    indices: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    last_seen: float = field(default_factory=time.monotonic)


@dataclass
class Measured:
    """One accepted frame after the temporal kernels, before classification."""

    position: int
    item: FrameIn
    state: StreamState
    motion: float
    tiles: torch.Tensor
    scene_change: bool


@dataclass
class AnalyzerTimes:
    """Where the analyzer's time went since it was made (host clock, seconds)."""

    rounds: int = 0  # kernel rounds: one per frame of the stream with the most frames in a step
    classified: int = 0  # frames sent through the classifier
    measure_s: float = 0.0  # temporal kernels queued, then their motion figures read on the host
    classify_s: float = 0.0  # classification queued (its results are read with the batch's figures)


class StreamError(ValueError):
    """A frame that cannot be taken for its stream: that request alone fails."""


class VideoAnalyzer:
    def __init__(self, pipeline: ImagePipeline, settings: VideoSettings = VideoSettings()):
        self.pipeline = pipeline
        self.settings = settings
        self.streams: dict[int, StreamState] = {}
        self.times = AnalyzerTimes()

    def step(self, frames: list[FrameIn]) -> list[FrameResult | Exception]:
        """Analyze one frame of each request; a bad frame gets its exception, the rest go on."""
        self._drop_idle_streams()
        results: list[FrameResult | Exception | None] = [None] * len(frames)
        # Two frames of one stream in a batch are taken in order, each against the one before.
        rounds: list[list[tuple[int, FrameIn]]] = []
        seen: dict[int, int] = {}
        for position, item in enumerate(frames):
            index = seen[item.stream] = seen.get(item.stream, -1) + 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append((position, item))
        for entries in rounds:
            self._step_round(entries, results)
        return results

    def _step_round(self, entries: list[tuple[int, FrameIn]], results: list) -> None:
        accepted: list[tuple[int, FrameIn, StreamState]] = []
        for position, item in entries:
            try:
                accepted.append((position, item, self._state_for(item)))
            except StreamError as exc:
                results[position] = exc
        began = time.perf_counter()
        measured = self._measure(accepted)
        measured_at = time.perf_counter()
        chosen = [m for m in measured if self._wants_classification(m)]
        self._classify(chosen)
        self.times.rounds += 1
        self.times.classified += len(chosen)
        self.times.measure_s += measured_at - began
        self.times.classify_s += time.perf_counter() - measured_at
        for m in measured:
            results[m.position] = self._result(m, classified=any(m is c for c in chosen))
            if m.item.end:
                self.streams.pop(m.item.stream, None)

    def _state_for(self, item: FrameIn) -> StreamState:
        frame = item.frame
        if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[-1] != 3:
            raise StreamError(f"frame must be (H, W, 3) uint8, got {tuple(frame.shape)} {frame.dtype}")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise StreamError(f"frame must not be empty, got shape {tuple(frame.shape)}")
        if item.start:
            # A restarted sequence begins afresh: whatever the id held before is forgotten.
            self.streams[item.stream] = StreamState(prev=frame, background=frame.float())
        state = self.streams.get(item.stream)
        if state is None:
            raise StreamError(f"stream {item.stream} has no state: it ended, idled out, or never started")
        if state.prev.shape != frame.shape:
            raise StreamError(
                f"stream {item.stream} changed frame size from {tuple(state.prev.shape)} "
                f"to {tuple(frame.shape)} without restarting"
            )
        return state

    def _measure(self, accepted):
        """Temporal kernels over all accepted frames, one launch per frame size."""
        by_shape: dict[tuple[int, ...], list[tuple[int, FrameIn, StreamState]]] = {}
        for entry in accepted:
            by_shape.setdefault(tuple(entry[1].frame.shape), []).append(entry)
        pending = []
        for group in by_shape.values():
            prev = torch.stack([state.prev for _, _, state in group])
            cur = torch.stack([item.frame for _, item, _ in group])
            background = torch.stack([state.background for _, _, state in group])
            # Distance from the background as it was before this frame joined it.
            scene_delta = (cur.float() - background).abs_().mean(dim=(1, 2, 3))
            energy, tiles, new_background = temporal_update(
                prev, cur, background, alpha=self.settings.background_alpha, grid=self.settings.grid
            )
            # Motion, distance and tiles of the whole group reach the host in one copy, so the
            # results hold host tensors and nothing after this waits on the device for them.
            figures = torch.cat([energy[:, None], scene_delta[:, None], tiles.flatten(1)], dim=1).to(torch.float32).cpu()
            energies, deltas = figures[:, 0].tolist(), figures[:, 1].tolist()
            host_tiles = figures[:, 2:].view(-1, *tiles.shape[1:])
            for row, (position, item, state) in enumerate(group):
                scene_change = (not item.start) and deltas[row] > self.settings.scene_threshold
                state.prev = item.frame
                state.background = item.frame.float() if scene_change else new_background[row]
                state.last_seen = time.monotonic()
                pending.append(Measured(position, item, state, energies[row], host_tiles[row], scene_change))
        return pending

    def _wants_classification(self, m: Measured) -> bool:
        return (
            m.state.indices is None
            or m.item.start
            or m.scene_change
            or m.motion > self.settings.motion_threshold
            or m.state.since_classified + 1 >= self.settings.classify_every
        )

    def _classify(self, chosen: list[Measured]) -> None:
        """One pipeline call for every frame that needs it, whatever its stream."""
        if not chosen:
            return
        keep_on_host(chosen, self.pipeline.classify_frames([m.item.frame for m in chosen]))

    def _result(self, m: Measured, classified: bool) -> FrameResult:
        state = m.state
        state.since_classified = 0 if classified else state.since_classified + 1
        result = FrameResult(
            frame_index=state.frame_index,
            motion=m.motion,
            tiles=m.tiles,
            scene_change=m.scene_change,
            classified=classified,
            indices=state.indices,
            scores=state.scores,
        )
        state.frame_index += 1
        return result

    def _drop_idle_streams(self) -> None:
        cutoff = time.monotonic() - self.settings.idle_timeout_s
        for stream in [s for s, state in self.streams.items() if state.last_seen < cutoff]:
            del self.streams[stream]


def keep_on_host(chosen: list[Measured], top: TopK) -> None:
    """The classified frames' streams take their new top-k, copied to the host in one copy: each
    stream's later results reuse it until its next classification."""
    k = top.scores.shape[1]
    host = torch.cat([top.scores.to(torch.float32), top.indices.to(torch.float32)], dim=1).cpu()
    for row, m in enumerate(chosen):
        # Class indices (< 1000) are exact in float32.
        m.state.scores, m.state.indices = host[row, :k], host[row, k:].long()


def settings_from_parameters(params: dict[str, str]) -> VideoSettings:
    """VideoSettings from a model config's string parameters; absent ones keep their defaults."""
    defaults = VideoSettings()
    grid = params.get("GRID")
    return VideoSettings(
        motion_threshold=float(params.get("MOTION_THRESHOLD", defaults.motion_threshold)),
        scene_threshold=float(params.get("SCENE_THRESHOLD", defaults.scene_threshold)),
        classify_every=int(params.get("CLASSIFY_EVERY", defaults.classify_every)),
        background_alpha=float(params.get("BACKGROUND_ALPHA", defaults.background_alpha)),
        grid=tuple(int(n) for n in grid.split("x")) if grid else defaults.grid,
        idle_timeout_s=float(params.get("IDLE_TIMEOUT_S", defaults.idle_timeout_s)),
    )
