"""fleet.json (from bench.gpu.run_fleet) -> the Markdown tables of docs/BENCHMARKS.md's H200 section.

    python -m bench.gpu.report fleet.json [more fleet-*.json]

Image rows: images/s (requests/s x images per request), latency percentiles, errors, and each
route's share of direct (gateway rows against the direct row of the same batch and concurrency).
Camera rows: streams offered, streams sustained (<= 1% late/dropped frames, p99 within the SLO),
frames/s answered, late and dropped frames, p99, and (encoded video) the late-or-dropped share of
keyframe slots and of the other slots; then, where the run recorded them, the camera
model's own p50 / p99 of each phase of a request (`camera_request_phases`). Warm-up runs are left out.
"""

from __future__ import annotations

import json
import re
import sys

from bench.gpu.camera_metrics import REQUEST_PHASES as PHASES


def _key(label: str):
    match = re.search(r"(image-(?:b\d+-)?c\d+|camera-[a-z0-9]+-s\d+(?:-f\d+)?)-(direct|gateway)$", label)
    return (label[: match.start()] + match.group(1), match.group(2)) if match else (label, "")


def image_table(runs: list[dict]) -> list[str]:
    lines = ["| layout | images/request | concurrency | route | images/s | vs direct | p50 ms | p99 ms | errors |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    direct = {}
    for run in runs:
        case, route = _key(run["label"])
        summary = run.get("summary")
        if "warmup" in run["label"] or not summary:
            continue
        batch, concurrency = re.search(r"image-(?:b(\d+)-)?c(\d+)", case).groups()
        batch, concurrency = int(batch or 1), int(concurrency)
        images = summary["throughput"] * batch
        if route == "direct":
            direct[case] = images
        ratio = f"{images / direct[case]:.2f}" if route == "gateway" and direct.get(case) else ""
        layout = case.split("/")[0] if "/" in case else "profile"
        latency = summary.get("latency_ms", {})
        lines.append(f"| {layout} | {batch} | {concurrency} | {route} | {images:,.0f} | {ratio} | "
                     f"{latency.get('p50', float('nan')):.1f} | {latency.get('p99', float('nan')):.1f} | {summary['errors']} |")
    return lines


def camera_table(runs: list[dict]) -> list[str]:
    lines = ["| codec | streams | route | sustained | frames/s answered | late | dropped | errors | p50 ms | p99 ms "
             "| keyframes late or dropped | other frames late or dropped |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        case, route = _key(run["label"])
        summary = run.get("summary")
        if not summary:
            lines.append(f"| {case} | | {route} | failed: {run.get('stderr', '')[-120:]!r} | | | | | | | | |")
            continue
        codec, streams = re.search(r"camera-([a-z0-9]+)-s(\d+)", case).groups()
        video = summary.get("video", {})
        latency = summary.get("latency_ms", {})
        lines.append(f"| {codec} | {streams} | {route} | {video.get('sustained', 0)} | {summary['throughput']:,.0f} | "
                     f"{video.get('late', 0)} | {video.get('dropped', 0)} | {summary['errors']} | "
                     f"{latency.get('p50', float('nan')):.1f} | {latency.get('p99', float('nan')):.1f} | "
                     f"{_missed(video, 'keyframes')} | {_missed(video, 'other_frames')} |")
    return lines


def _missed(video: dict, kind: str) -> str:
    row = video.get("by_frame", {}).get(kind)
    return f"{(row['late'] + row['dropped']) / row['slots']:.1%} of {row['slots']:,}" if row and row["slots"] else "-"


def phase_table(runs: list[dict]) -> list[str]:
    lines = ["| camera run | route | " + " | ".join(f"{phase} p50 / p99 ms" for phase in PHASES) + " |",
             "| --- | --- | " + " | ".join("---" for _ in PHASES) + " |"]
    for run in runs:
        phases = run.get("camera_request_phases")
        if not phases:
            continue
        case, route = _key(run["label"])
        cells = [f"{phases[p]['p50_ms']:.1f} / {phases[p]['p99_ms']:.1f}" if p in phases else "-" for p in PHASES]
        lines.append(f"| {case} | {route} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def main(paths: list[str]) -> int:
    runs = []
    for path in paths:
        data = json.load(open(path))
        print(f"{path}: {data['gpu']}; {data['date']}; Python {data['python']}; {data['cpus']} CPUs")
        runs += data["runs"]
        for note in data["notes"]:
            print(f"- {note}")
    print()
    images = [r for r in runs if "image-" in r["label"]]
    cameras = [r for r in runs if "camera-" in r["label"]]
    if images:
        print("\n".join(image_table(images)) + "\n")
    if cameras:
        print("\n".join(camera_table(cameras)) + "\n")
        phases = phase_table(cameras)
        if phases:
            print("\n".join(phases) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
