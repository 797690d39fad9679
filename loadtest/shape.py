"""Load shapes: constant, steps and ramps, and the open-loop arrival schedule they produce.

A `Shape` is a list of stages; each stage holds a rate (requests/s, open loop) or a concurrency
(closed loop) for a duration, either flat or ramping linearly from the previous stage's level.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    duration_s: float
    level: float  # requests/s (open loop) or in-flight requests (closed loop)
    ramp: bool = False  # rise linearly from the previous stage's level instead of jumping

    def __post_init__(self):
        if self.duration_s <= 0:
            raise ValueError(f"a stage needs a positive duration, got {self.duration_s}")
        if self.level < 0:
            raise ValueError(f"a stage's rate or concurrency cannot be negative, got {self.level}")


@dataclass(frozen=True)
class Shape:
    stages: tuple[Stage, ...]

    def __post_init__(self):
        if not self.stages:
            raise ValueError("a shape needs at least one stage")

    @classmethod
    def constant(cls, level: float, duration_s: float) -> "Shape":
        return cls((Stage(duration_s, level),))

    @classmethod
    def steps(cls, levels: list[float], step_s: float) -> "Shape":
        return cls(tuple(Stage(step_s, level) for level in levels))

    @classmethod
    def parse(cls, text: str) -> "Shape":
        """`"10s@200"`, `"5s@100,5s@200"`, or `"5s@100,10s@~400"` (`~` ramps to that level)."""
        stages = []
        for part in text.split(","):
            try:
                duration, level = part.strip().split("@")
                ramp = level.startswith("~")
                stages.append(Stage(float(duration.rstrip("s")), float(level.lstrip("~")), ramp=ramp))
            except ValueError as exc:
                raise ValueError(f"bad shape stage {part!r} (want e.g. '10s@200' or '10s@~400'): {exc}") from None
        return cls(tuple(stages))

    @property
    def duration_s(self) -> float:
        return sum(stage.duration_s for stage in self.stages)

    @property
    def peak(self) -> float:
        return max(stage.level for stage in self.stages)

    def level_at(self, t_s: float) -> float:
        start_s, previous = 0.0, self.stages[0].level
        for stage in self.stages:
            if t_s < start_s + stage.duration_s:
                if stage.ramp:
                    return previous + (stage.level - previous) * (t_s - start_s) / stage.duration_s
                return stage.level
            start_s += stage.duration_s
            previous = stage.level
        return self.stages[-1].level

    def describe(self) -> list[dict]:
        return [{"duration_s": s.duration_s, "level": s.level, "ramp": s.ramp} for s in self.stages]


def arrival_offsets_ns(shape: Shape, poisson: bool = False, seed: int = 0) -> list[int]:
    """Scheduled send times (ns from the start) for an open-loop run of this shape.

    Constant arrivals are evenly spaced at 1/rate (computed from the arrival's number within its
    stage, so they land exactly on second boundaries); Poisson arrivals have exponential gaps of the
    same mean. In a ramp the rate is re-read at every arrival.
    """
    rng = random.Random(seed)
    offsets: list[int] = []
    stage_start = 0.0
    for stage in shape.stages:
        stage_end = stage_start + stage.duration_s
        if not poisson and not stage.ramp:
            if stage.level > 0:
                count = math.ceil(stage.duration_s * stage.level - 1e-9)
                offsets.extend(int(round((stage_start + k / stage.level) * 1e9)) for k in range(count))
        else:
            t_s = stage_start
            while True:
                rate = shape.level_at(t_s)
                if rate <= 0:
                    t_s += 0.001  # an idle stretch: look again a millisecond later
                    if t_s >= stage_end:
                        break
                    continue
                t_s += rng.expovariate(rate) if poisson else 1.0 / rate
                if t_s >= stage_end:
                    break
                offsets.append(int(t_s * 1e9))
        stage_start = stage_end
    return offsets
