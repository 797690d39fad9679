"""One result record per request (or per video frame slot), and the recorder that aggregates them.

Generators emit `RequestResult`s; a `Recorder` folds them into HDR histograms and counters that can be
merged (workers of one run, pods of one Job) and saved as JSON, so reports never need the raw records.
Latency always counts from the request's *scheduled* send time: a server that stalls makes every request
scheduled during the stall late, instead of silently slowing the sender down (coordinated omission).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from hdrh.histogram import HdrHistogram

# Microseconds from 1 µs to one hour, three significant digits: 0.1% resolution at any latency.
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000
_DIGITS = 3

OK = "OK"
DROPPED = "DROPPED"
# An answer on a live stream that carries only `error_message`: Triton sends no status code with it
# (a unary call with the same fault gets the model's code), and the stream goes on.
STREAM_ERROR = "STREAM_ERROR"
KEYFRAMES, OTHER_FRAMES = "keyframes", "other_frames"


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def encode_histogram(histogram: HdrHistogram) -> str:
    return histogram.encode().decode("ascii")


def decode_histogram(text: str) -> HdrHistogram:
    merged = new_histogram()
    if text:
        merged.add(HdrHistogram.decode(text.encode("ascii")))
    return merged


def record_latency(histogram: HdrHistogram, latency_us: int) -> None:
    histogram.record_value(min(max(latency_us, _LOWEST_US), _HIGHEST_US))


def record_many(histogram: HdrHistogram, latencies_us: list[int]) -> None:
    """`record_latency` for many values at once, vectorized: the per-request cost of a busy worker.

    The index arithmetic is hdrh's own (`_counts_index_for`), done over a numpy array; a test holds
    it equal to recording the values one by one.
    """
    if not latencies_us:
        return
    values = np.clip(np.asarray(latencies_us, dtype=np.int64), _LOWEST_US, _HIGHEST_US)
    # bit_length(v | mask) from the float exponent: exact, since values stay far below 2**53.
    pow2ceiling = np.frexp((values | histogram.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = pow2ceiling - histogram.unit_magnitude - (histogram.sub_bucket_half_count_magnitude + 1)
    sub_bucket = values >> (bucket + histogram.unit_magnitude)
    index = ((bucket + 1) << histogram.sub_bucket_half_count_magnitude) + sub_bucket - histogram.sub_bucket_half_count
    slots, counts = np.unique(index, return_counts=True)
    for slot, count in zip(slots.tolist(), counts.tolist()):
        histogram.counts[slot] += count
    histogram.total_count += len(values)
    histogram.min_value = min(histogram.min_value, int(values.min()))
    histogram.max_value = max(histogram.max_value, int(values.max()))


class RequestResult(NamedTuple):
    """What happened to one request (image) or one frame slot (video). Times are monotonic ns."""

    scheduled_ns: int
    sent_ns: int  # 0 when the frame was dropped and never sent
    done_ns: int
    status: str  # "OK", a gRPC status code name, "STREAM_ERROR" or "DROPPED"
    stream: int = -1  # video: the camera stream; -1 for images
    deadline_ns: int = 0  # video: 1/FPS; 0 when there is no per-request deadline
    keyframe: bool = False  # encoded video: the slot's access unit is a keyframe

    @property
    def latency_ns(self) -> int:
        return self.done_ns - self.scheduled_ns

    @property
    def late(self) -> bool:
        return self.status == OK and self.deadline_ns > 0 and self.latency_ns > self.deadline_ns


@dataclass
class SlotStats:
    """Frame slots and how each one went: answered (late or not), dropped, failed."""

    slots: int = 0
    answered: int = 0
    late: int = 0
    dropped: int = 0
    errors: int = 0
    latency: HdrHistogram = field(default_factory=new_histogram)

    COUNTS = ("slots", "answered", "late", "dropped", "errors")

    def record(self, result: RequestResult) -> int | None:
        """Count the slot; its latency in µs when it was answered."""
        self.slots += 1
        if result.status == DROPPED:
            self.dropped += 1
            return None
        if result.status != OK:
            self.errors += 1
            return None
        self.answered += 1
        self.late += result.late
        latency_us = result.latency_ns // 1000
        record_latency(self.latency, latency_us)
        return latency_us

    @property
    def p99_ms(self) -> float:
        return self.latency.get_value_at_percentile(99) / 1000 if self.answered else 0.0

    def merge(self, other: "SlotStats") -> None:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.add(other.latency)

    def to_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in self.COUNTS}, "latency": encode_histogram(self.latency)}

    @classmethod
    def from_dict(cls, data: dict):
        stats = cls(**{key: value for key, value in data.items() if key != "latency"})
        stats.latency = decode_histogram(data["latency"])
        return stats


@dataclass
class StreamStats(SlotStats):
    """One camera stream's slots, and how much its latency moved from one frame to the next."""

    jitter_sum_us: int = 0  # sum of |latency_k - latency_(k-1)| over consecutive answered frames
    jitter_pairs: int = 0
    last_latency_us: int = -1

    COUNTS = SlotStats.COUNTS + ("jitter_sum_us", "jitter_pairs")

    def record(self, result: RequestResult) -> int | None:
        latency_us = super().record(result)
        if latency_us is not None:
            if self.last_latency_us >= 0:
                self.jitter_sum_us += abs(latency_us - self.last_latency_us)
                self.jitter_pairs += 1
            self.last_latency_us = latency_us
        return latency_us

    @property
    def jitter_ms(self) -> float:
        return self.jitter_sum_us / self.jitter_pairs / 1000 if self.jitter_pairs else 0.0


@dataclass
class Second:
    """One second of the measured period (by scheduled time): counts and a latency histogram.

    Latencies wait in a plain list and go into the histogram in one vectorized step when it is read.
    """

    sent: int = 0
    ok: int = 0
    errors: int = 0
    late: int = 0
    dropped: int = 0
    histogram: HdrHistogram = field(default_factory=new_histogram)
    pending_us: list[int] = field(default_factory=list)

    @property
    def latency(self) -> HdrHistogram:
        if self.pending_us:
            record_many(self.histogram, self.pending_us)
            self.pending_us = []
        return self.histogram

    def merge(self, other: "Second") -> None:
        for name in ("sent", "ok", "errors", "late", "dropped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency.add(other.latency)

    def to_dict(self) -> dict:
        return {"sent": self.sent, "ok": self.ok, "errors": self.errors, "late": self.late,
                "dropped": self.dropped, "latency": encode_histogram(self.latency)}

    @classmethod
    def from_dict(cls, data: dict) -> "Second":
        second = cls(**{key: value for key, value in data.items() if key != "latency"})
        second.histogram = decode_histogram(data["latency"])
        return second


class Recorder:
    """Aggregates results scheduled at or after `measure_from_ns` (warm-up before it is left out)."""

    def __init__(self, measure_from_ns: int = 0):
        self.measure_from_ns = measure_from_ns
        self.statuses: Counter[str] = Counter()
        self.timeline: dict[int, Second] = {}
        self.streams: dict[int, StreamStats] = {}
        # Encoded video: the slots whose access unit is a keyframe, and the others.
        self.frame_kinds: dict[str, SlotStats] = {}
        self.sent = 0
        self.first_sent_ns = 0
        self.last_sent_ns = 0

    def record(self, result: RequestResult) -> None:
        if result.scheduled_ns < self.measure_from_ns:
            return
        second = self._second(result.scheduled_ns)
        if result.stream >= 0:
            self.streams.setdefault(result.stream, StreamStats()).record(result)
            self.frame_kinds.setdefault(KEYFRAMES if result.keyframe else OTHER_FRAMES, SlotStats()).record(result)
        self.statuses[result.status] += 1
        if result.status == DROPPED:
            second.dropped += 1
            return
        self._count_send(result.sent_ns)
        second.sent += 1
        if result.status != OK:
            second.errors += 1
            return
        second.ok += 1
        second.late += result.late
        second.pending_us.append(result.latency_ns // 1000)

    @property
    def latency(self) -> HdrHistogram:
        """All measured latencies: the sum of the seconds' histograms."""
        total = new_histogram()
        for second in self.timeline.values():
            total.add(second.latency)
        return total

    def _second(self, scheduled_ns: int) -> Second:
        index = (scheduled_ns - self.measure_from_ns) // 1_000_000_000
        second = self.timeline.get(index)
        if second is None:
            second = self.timeline[index] = Second()
        return second

    def _count_send(self, sent_ns: int) -> None:
        self.sent += 1
        if not self.first_sent_ns or sent_ns < self.first_sent_ns:
            self.first_sent_ns = sent_ns
        self.last_sent_ns = max(self.last_sent_ns, sent_ns)

    def merge(self, other: "Recorder") -> None:
        """Add another recorder's results; the timeline lines up by seconds since each one's start."""
        self.statuses.update(other.statuses)
        for index, second in other.timeline.items():
            self.timeline.setdefault(index, Second()).merge(second)
        for stream, stats in other.streams.items():
            self.streams.setdefault(stream, StreamStats()).merge(stats)
        for kind, stats in other.frame_kinds.items():
            self.frame_kinds.setdefault(kind, SlotStats()).merge(stats)
        self.sent += other.sent
        firsts = [t for t in (self.first_sent_ns, other.first_sent_ns) if t]
        self.first_sent_ns = min(firsts) if firsts else 0
        self.last_sent_ns = max(self.last_sent_ns, other.last_sent_ns)

    @property
    def send_rate(self) -> float:
        """Requests actually sent per second, from the first send to the last."""
        span_s = (self.last_sent_ns - self.first_sent_ns) / 1e9
        return (self.sent - 1) / span_s if self.sent > 1 and span_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "measure_from_ns": self.measure_from_ns,
            "statuses": dict(self.statuses),
            "timeline": {str(index): second.to_dict() for index, second in sorted(self.timeline.items())},
            "streams": {str(stream): stats.to_dict() for stream, stats in sorted(self.streams.items())},
            "frame_kinds": {kind: stats.to_dict() for kind, stats in sorted(self.frame_kinds.items())},
            "sent": self.sent,
            "first_sent_ns": self.first_sent_ns,
            "last_sent_ns": self.last_sent_ns,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Recorder":
        recorder = cls(data["measure_from_ns"])
        recorder.statuses = Counter(data["statuses"])
        recorder.timeline = {int(k): Second.from_dict(v) for k, v in data["timeline"].items()}
        recorder.streams = {int(k): StreamStats.from_dict(v) for k, v in data["streams"].items()}
        recorder.frame_kinds = {k: SlotStats.from_dict(v) for k, v in data.get("frame_kinds", {}).items()}
        recorder.sent = data["sent"]
        recorder.first_sent_ns = data["first_sent_ns"]
        recorder.last_sent_ns = data["last_sent_ns"]
        return recorder
