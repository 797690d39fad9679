"""A benchmark's results file, written again after every result, so a run cut short (its time budget,
a device call's limit) keeps what it measured; and the time budget its steps are planned against."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path


def gpu_name() -> str:
    """The machine's GPU and driver as nvidia-smi names them, "unknown" without one."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Record:
    """`runs` (one dict each) and `notes`, under the date, Python, GPU and CPU count of the run."""

    def __init__(self, path: Path, budget_s: float):
        self.path = path
        self.deadline = time.monotonic() + budget_s
        self.data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
                     "gpu": gpu_name(), "cpus": os.cpu_count(), "runs": [], "notes": []}
        self.save()

    def left(self) -> float:
        """Seconds of the budget still left."""
        return self.deadline - time.monotonic()

    def add(self, run: dict, unprinted: tuple[str, ...] = ()) -> None:
        """Keep `run`, and print it (without the long `unprinted` keys) for the call's output."""
        self.data["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k not in unprinted}), flush=True)
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        print(text, flush=True)
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1))
