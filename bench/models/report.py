"""models-gpu.json (from bench.models.gpu_bench) -> the Markdown tables of docs/BENCHMARKS.md.

    python -m bench.models.report models-gpu.json
"""

from __future__ import annotations

import json
import sys


def image_table(runs: list[dict]) -> list[str]:
    lines = [
        "| decoding | images/request | concurrency | images/s | p50 ms | p99 ms | requests | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        decoder = run["kind"].split(", ")[-1]
        lines.append(
            f"| {decoder} | {run['batch']} | {run['concurrency']} | {run['images_per_s']:.0f} | "
            f"{run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['requests']} | {run['errors']} |"
        )
    return lines


def video_table(runs: list[dict]) -> list[str]:
    lines = [
        "| video_pipeline instances | streams | offered FPS | frames/s served | classified frames | p50 ms | p99 ms | frames | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        # "video 1080p@30, 4 instances" names the count; plain runs use the profile's one instance.
        instances = run["kind"].split(", ")[1].split()[0] if ", " in run["kind"] else "1"
        lines.append(
            f"| {instances} | {run['streams']} | {run['streams'] * run['fps']:.0f} | {run['frames_per_s']:.0f} | {run['classified']} | "
            f"{run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['frames']} | {run['errors']} |"
        )
    return lines


def main(path: str) -> int:
    data = json.load(open(path))
    runs = data["runs"]
    print(f"GPU: {data['gpu']}; date: {data['date']}; Python {data['python']}\n")
    for table, kind in ((image_table, "image"), (video_table, "video")):
        chosen = [r for r in runs if r["kind"].startswith(kind)]
        if chosen:
            print("\n".join(table(chosen)) + "\n")
    for note in data["notes"]:
        if "statistics" in note:
            print(f"- {note}")
    notes = [n for n in data["notes"] if "skipped" in n or "did not start" in n]
    if notes:
        print("\n" + "\n".join(f"- {note}" for note in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
