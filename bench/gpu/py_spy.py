"""py-spy samples of the fleet's Python processes during a run, and what they add up to.

The camera model's capacity is per stub process (its GIL around the decode threads, the analysis
thread and the execute loop), so the question a run has to answer is which code holds that GIL.
`py-spy record --gil` samples only the thread holding it; without `--gil`, every thread on a CPU.
Raw output is one line per distinct stack, `frame;frame;... count`, outermost frame first.

    python -m bench.gpu.py_spy FILE [FILE ...]      (the top functions of each recording)
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter
from pathlib import Path

RATE_HZ = 200


def binary(site: Path) -> Path | None:
    """The py-spy executable the `profiler` part of the carry unpacked into `site`, if it travelled."""
    found = sorted(site.glob("py_spy-*.data/scripts/py-spy"))
    return found[0] if found else None


def record(executable: Path, pid: int, delay_s: float, seconds: float, out: Path, gil: bool) -> subprocess.Popen:
    """Sample `pid` for `seconds`, starting `delay_s` from now (when a run's load is steady), into `out`.
    Non-blocking: the process is read while it runs, not stopped at each sample."""
    argv = [str(executable), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(RATE_HZ),
            "--format", "raw", "--output", str(out), "--nonblocking", "--threads", *(["--gil"] if gil else [])]
    with out.with_suffix(".log").open("w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(["bash", "-c", f"sleep {delay_s:.1f} && exec \"$@\"", "py-spy", *argv],
                                stdout=log, stderr=subprocess.STDOUT)


def stacks(path: Path) -> Counter:
    """Stack (tuple of frames, outermost first) -> samples, from a raw recording."""
    counts: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[tuple(stack.split(";"))] += int(count)
    return counts


def _function(frame: str) -> str:
    """`name (file.py:line)` -> `name (file.py)`: one entry per function, whatever its line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def summary(counts: Counter, top: int = 25) -> dict:
    """Samples in all; per thread; and the functions with the most samples on top of the stack (self)
    and anywhere in it (total), as shares of all samples."""
    total = sum(counts.values()) or 1
    threads: Counter = Counter()
    own: Counter = Counter()
    inclusive: Counter = Counter()
    for stack, count in counts.items():
        frames = list(stack)
        if frames and frames[0].startswith(("thread (", "process ")):
            threads[frames.pop(0).split(": ", 1)[-1]] += count  # by name, not thread id
        functions = [_function(f) for f in frames]
        if functions:
            own[functions[-1]] += count
        for name in set(functions):
            inclusive[name] += count
    share = lambda counter: [(name, round(n / total, 3)) for name, n in counter.most_common(top)]  # noqa: E731
    return {"samples": total, "threads": share(threads), "self": share(own), "total": share(inclusive)}


def bundle(folder: Path, out: Path, top: int = 40) -> None:
    """Every recording in `folder`, summarized, in one JSON file (a device call returns few files)."""
    summaries = {path.stem: summary(stacks(path), top) for path in sorted(folder.glob("*.txt"))}
    out.write_text(json.dumps(summaries, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        result = summary(stacks(path), args.top)
        print(f"== {path.name}: {result['samples']} samples")
        for title in ("threads", "self", "total"):
            print(f"  -- {title}")
            for name, part in result[title]:
                print(f"  {part:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
