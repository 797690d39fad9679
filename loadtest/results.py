"""A run's saved result (versioned JSON), its summary figures, stability windows, and merging.

The recorder is the source of truth; the summary is recomputed from it whenever a result is loaded,
so results merged from several pods summarize exactly like one big run.

Format version 2 holds the config as a typed record (`loadtest.run_config`) and the run's facts
(generator CPU, how many results were merged, a sweep's outcome) beside it; version 1 files, which
kept those facts inside the config dict, still load.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.records import DROPPED, KEYFRAMES, OK, Recorder, SlotStats
from loadtest.run_config import ImageConfig, VideoConfig, config_from_dict, from_v1

FORMAT = "tritonfleet.loadtest.result"
VERSION = 2
READABLE_VERSIONS = (1, 2)
PERCENTILES = (50, 90, 95, 99, 99.9)


@dataclass(frozen=True)
class SweepOutcome:
    slo_ms: float  # the p99 the sweep had to stay under
    best: float  # the highest level that met it (0: none did)


@dataclass
class RunResult:
    kind: str  # "image" or "video"
    config: ImageConfig | VideoConfig
    recorder: Recorder
    started_at: str = ""
    servers: dict = field(default_factory=dict)  # {"source": ..., "requests": {server: count}}
    trials: list = field(default_factory=list)  # sweep: one summary per trial
    generator_cpu_s: float = 0.0  # CPU the workers spent generating load, start-up left out
    merged_from: int = 1  # results merged into this one (the pods of one Job)
    sweep: SweepOutcome | None = None

    def __post_init__(self):
        if self.config.KIND != self.kind:
            raise ValueError(f"a {self.kind} result cannot carry a {self.config.KIND or 'generic'} config")

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "kind": self.kind, "started_at": self.started_at,
            "config": self.config.to_dict(), "servers": self.servers, "trials": self.trials,
            "generator_cpu_s": self.generator_cpu_s, "merged_from": self.merged_from,
            "sweep": dataclasses.asdict(self.sweep) if self.sweep else None,
            "summary": summarize(self), "recorder": self.recorder.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a load-test result (format {data.get('format')!r}, want {FORMAT!r})")
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"result version {version} is not supported (this reads {READABLE_VERSIONS})")
        kind = data["kind"]
        # Version 1 kept the run's facts inside the config.
        facts = data["config"] if version == 1 else data
        config = from_v1(kind, data["config"]) if version == 1 else config_from_dict(kind, data["config"])
        sweep = facts.get("sweep")
        return cls(kind=kind, config=config, recorder=Recorder.from_dict(data["recorder"]),
                   started_at=data.get("started_at", ""), servers=data.get("servers", {}),
                   trials=data.get("trials", []), generator_cpu_s=float(facts.get("generator_cpu_s", 0.0)),
                   merged_from=int(facts.get("merged_from", 1)), sweep=SweepOutcome(**sweep) if sweep else None)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    def to_json_line(self) -> str:
        """The whole result on one line: the last line of a pod's log, which outlives the pod."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def load(cls, path: str | Path) -> "RunResult":
        """A saved result, or a captured log whose last line is one (`--print-result`)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read result {path}: {exc.strerror}") from None
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            lines = text.rstrip().splitlines()
            if len(lines) > 1 and lines[-1].startswith("{"):
                try:
                    return cls.from_dict(json.loads(lines[-1]))
                except json.JSONDecodeError:
                    pass
            raise ValueError(f"{path} is neither a result nor a log ending in one: {exc}") from None


def merge_results(results: list[RunResult]) -> RunResult:
    """One result from several (the pods of one Job, or repeated runs of one configuration).

    Timelines line up by seconds since each run's own start; counts add and percentiles come from
    the merged histograms. Camera streams stay apart: each run's streams are numbered after the
    previous run's, so every stream of every pod keeps its own row (and its own FPS).
    """
    if not results:
        raise ValueError("nothing to merge")
    kinds = {result.kind for result in results}
    if len(kinds) > 1:
        raise ValueError(f"cannot merge results of different workloads: {sorted(kinds)}")
    recorder = Recorder()
    servers: dict[str, int] = {}
    for result in results:
        recorder.merge(_streams_after(result.recorder, len(recorder.streams) and max(recorder.streams) + 1))
        for name, count in result.servers.get("requests", {}).items():
            servers[name] = servers.get(name, 0) + count
    first = results[0]
    source = first.servers.get("source", "")
    config = first.config
    if first.kind == "video":
        config = dataclasses.replace(config, streams=len(recorder.streams))
    return RunResult(first.kind, config, recorder, first.started_at,
                     {"source": source, "requests": servers} if servers else {},
                     generator_cpu_s=sum(result.generator_cpu_s for result in results),
                     merged_from=sum(result.merged_from for result in results))


def _streams_after(recorder: Recorder, first: int) -> Recorder:
    """The same recorder seen with its stream numbers starting at `first` (nothing is copied)."""
    if not first or not recorder.streams:
        return recorder
    view = copy.copy(recorder)
    view.streams = {first + stream: stats for stream, stats in recorder.streams.items()}
    return view


def measured_seconds(recorder: Recorder) -> int:
    return max(recorder.timeline) + 1 if recorder.timeline else 0


def stability(recorder: Recorder, window_s: int = 1, windows: int = 3, tolerance: float = 0.1) -> dict:
    """perf_analyzer's rule: the last `windows` windows agree within ±tolerance on throughput and on
    mean latency (its default measure; a p99 of one short window is too few samples to compare)."""
    seconds = measured_seconds(recorder)
    count = seconds // window_s
    if count < windows:
        return {"stable": False, "reason": f"only {count} windows of {window_s} s measured", "windows": []}
    rows = []
    for w in range(count - windows, count):
        ok, latency_sum_ms = 0, 0.0
        for index in range(w * window_s, (w + 1) * window_s):
            second = recorder.timeline.get(index)
            if second and second.ok:
                ok += second.ok
                latency_sum_ms += second.latency.get_mean_value() / 1000 * second.ok
        rows.append({"throughput": ok / window_s, "mean_ms": latency_sum_ms / ok if ok else 0.0})
    unstable = []
    # Latency swings under a millisecond are scheduling noise, not a trend, however large in relative terms.
    for key, floor in (("throughput", 0.0), ("mean_ms", 1.0)):
        values = [row[key] for row in rows]
        mean = statistics.fmean(values)
        if mean and any(abs(value - mean) > max(tolerance * mean, floor) for value in values):
            unstable.append(key)
    return {"stable": not unstable, "reason": f"{', '.join(unstable)} varied over ±{tolerance:.0%}" if unstable
            else "", "windows": rows}


def _stream_summary(recorder: Recorder, slo_ms: float, tolerance: float) -> dict:
    streams = recorder.streams
    sustained = 0
    per_stream = []
    for stream, stats in sorted(streams.items()):
        missed = stats.late + stats.dropped + stats.errors
        p99 = stats.p99_ms
        ok = stats.slots > 0 and missed <= tolerance * stats.slots and (not slo_ms or p99 <= slo_ms)
        sustained += ok
        per_stream.append({"stream": stream, "slots": stats.slots, "answered": stats.answered, "late": stats.late,
                           "dropped": stats.dropped, "errors": stats.errors, "p99_ms": p99,
                           "jitter_ms": stats.jitter_ms, "sustained": ok})
    summary = {"streams": len(streams), "sustained": sustained, "per_stream": per_stream,
               "late": sum(s.late for s in streams.values()), "dropped": sum(s.dropped for s in streams.values())}
    if KEYFRAMES in recorder.frame_kinds:
        # Encoded video: whether the late and dropped frames are the keyframes (a decoder's dearest
        # pictures) or spread over every frame says where a camera fleet's tail comes from.
        summary["by_frame"] = {kind: {**{name: getattr(stats, name) for name in SlotStats.COUNTS},
                                      "p99_ms": stats.p99_ms}
                               for kind, stats in sorted(recorder.frame_kinds.items())}
    return summary


def summarize(result: RunResult) -> dict:
    recorder = result.recorder
    seconds = measured_seconds(recorder) or 1
    ok = recorder.statuses.get(OK, 0)
    errors = sum(count for status, count in recorder.statuses.items() if status not in (OK, DROPPED))
    latency = recorder.latency
    summary = {
        "measured_s": seconds, "sent": recorder.sent, "ok": ok, "errors": errors,
        "statuses": dict(recorder.statuses), "send_rate": recorder.send_rate, "throughput": ok / seconds,
        "latency_ms": {f"p{p:g}": latency.get_value_at_percentile(p) / 1000 for p in PERCENTILES} if ok else {},
        "mean_ms": latency.get_mean_value() / 1000 if ok else 0.0,
        "max_ms": latency.get_max_value() / 1000 if ok else 0.0,
        "stability": stability(recorder, result.config.window_s),
    }
    if result.kind == "video":
        summary["video"] = _stream_summary(recorder, result.config.slo_ms, result.config.miss_tolerance)
    if result.servers.get("requests"):
        total = sum(result.servers["requests"].values()) or 1
        summary["server_share"] = {name: count / total for name, count in sorted(result.servers["requests"].items())}
    return summary
