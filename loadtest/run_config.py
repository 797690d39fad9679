"""What a load run was asked to do, as saved with its result: one frozen record per workload.

Reporters and summaries read these fields directly; reading a saved result checks its keys against
the record, so a misspelt or missing key is an error when the file is loaded, not a silent default
later. Results written before the record existed (format version 1) are read through `from_v1`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from loadtest.shape import Shape, Stage


@dataclass(frozen=True)
class RunConfig:
    """Settings both workloads share: the target, the tensor, timing and the generator's layout."""

    KIND: ClassVar[str] = ""

    url: str
    model: str
    input: str = "IMAGE"
    datatype: str = "BYTES"
    batch_size: int = 1
    batch_dim: bool = True
    jpeg_quality: int = 90
    warmup_s: float = 1.0
    window_s: int = 1  # stability window, seconds
    slo_ms: float = 0.0  # p99 objective; 0: none
    timeout_s: float = 30.0
    workers: int = 1  # worker processes
    connections: int = 1  # gRPC connections per worker
    # Names of the custom metadata sent with every call; the values are left out, as they may be credentials.
    metadata_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["metadata_keys"] = list(self.metadata_keys)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.KIND} config keys in result: {', '.join(unknown)}")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ValueError(f"{cls.KIND} config in result lacks {', '.join(missing)}")
        return cls(**cls._typed(dict(data)))

    @classmethod
    def _typed(cls, data: dict) -> dict:
        if "metadata_keys" in data:
            data["metadata_keys"] = tuple(data["metadata_keys"])
        return data


@dataclass(frozen=True)
class ImageConfig(RunConfig):
    KIND: ClassVar[str] = "image"

    loop: str = "open"  # "open" (a rate) or "closed" (a concurrency)
    poisson: bool = False
    shape: Shape = field(default_factory=lambda: Shape.constant(100, 10))
    source: str = "synthetic"
    resolution: str = "480p"

    @property
    def peak(self) -> float:
        return self.shape.peak

    def to_dict(self) -> dict:
        return {**super().to_dict(), "shape": self.shape.describe()}

    @classmethod
    def _typed(cls, data: dict) -> dict:
        data = super()._typed(data)
        if "shape" in data:
            data["shape"] = Shape(tuple(Stage(**stage) for stage in data["shape"]))
        return data


@dataclass(frozen=True)
class VideoConfig(RunConfig):
    KIND: ClassVar[str] = "video"

    input: str = "FRAME"
    datatype: str = "UINT8"
    streams: int = 4
    fps: float = 15.0
    duration_s: float = 10.0
    mode: str = "stream"  # "stream" (ModelStreamInfer per camera) or "unary" (ModelInfer per frame)
    miss_tolerance: float = 0.01  # a stream is sustained when at most this share of its frames missed
    frames_in_flight: int = 1  # frames a camera had awaiting answers before it dropped its next
    source: str = "synthetic 480p"


CONFIGS = {ImageConfig.KIND: ImageConfig, VideoConfig.KIND: VideoConfig}
# Version 1 kept run facts among the settings; they now live beside the config in the result.
V1_RUN_FACTS = ("generator_cpu_s", "merged_from", "sweep")
# Version 1 keys that were derived from others (the shape's first level) or repeated the result's kind.
_V1_DERIVED = ("workload", "level")


def config_from_dict(kind: str, data: dict) -> "ImageConfig | VideoConfig":
    """A saved result's config dict as the record of its workload `kind`."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown workload {kind!r} in result (want one of {sorted(CONFIGS)})")
    return CONFIGS[kind].from_dict(data)


def from_v1(kind: str, data: dict) -> "ImageConfig | VideoConfig":
    """A version-1 result's config dict: the same settings, plus run facts and derived keys."""
    settings = {key: value for key, value in data.items() if key not in V1_RUN_FACTS + _V1_DERIVED}
    return config_from_dict(kind, settings)
