"""CPU time by part of the fleet, read from /proc, to say whether the machine's cores limit a run.

Every long-lived part of the fleet runs in a session of its own (`tritonfleet.processes.spawn`
starts each in a new one), so a part's CPU time is the sum over the live processes of its session.
The Triton session holds the server and the Python-backend stubs, told apart by their command name.
The load generator is a child that has ended by the time a run is read: its CPU time (and its
workers', which it waited for) is what `resource.getrusage(RUSAGE_CHILDREN)` gained meanwhile.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
STUB_COMMAND = "triton_python_b"  # triton_python_backend_stub, as the kernel's 15-character comm field holds it


def _processes():
    """(pid folder, command, session id, CPU seconds) of every process still alive."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # ended while being read
            continue
        command = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        # After the command: state ppid pgrp session ... utime (11) stime (12), in clock ticks.
        yield entry, command, int(fields[3]), (int(fields[11]) + int(fields[12])) / TICKS


def _machine_busy_s() -> float:
    """CPU seconds every core has spent busy since boot (all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS


def session_processes(sid: int, command_prefix: str, cmdline_part: str = "") -> list[int]:
    """Pids of the live processes in session `sid` whose command starts with `command_prefix` and whose
    command line holds `cmdline_part` (a stub's holds its model's path)."""
    pids = []
    for entry, command, session, _ in _processes():
        if session != sid or not command.startswith(command_prefix):
            continue
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline_part in line:
            pids.append(int(entry.name))
    return sorted(pids)


@dataclass
class Reading:
    parts: dict[str, float] = field(default_factory=dict)
    children_s: float = 0.0
    machine_s: float = 0.0


def read(sessions: dict[str, int]) -> Reading:
    """CPU seconds so far of each named session (`{"triton": sid, ...}`); the Triton session's stubs
    are counted apart as "stubs"."""
    names = {sid: name for name, sid in sessions.items()}
    parts = {name: 0.0 for name in sessions}
    for _, command, sid, seconds in _processes():
        name = names.get(sid)
        if name is None:
            continue
        if command.startswith(STUB_COMMAND):
            name = "stubs"
        parts[name] = parts.get(name, 0.0) + seconds
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Reading(parts, usage.ru_utime + usage.ru_stime, _machine_busy_s())


def cores_used(before: Reading, after: Reading, wall_s: float, child: str = "load generator") -> dict[str, float]:
    """What each part used between two readings, in cores (CPU seconds per second of wall time):
    the named sessions, `child` (children that ended meanwhile) and the whole machine."""
    if wall_s <= 0:
        return {}
    out = {name: round((seconds - before.parts.get(name, 0.0)) / wall_s, 2) for name, seconds in after.parts.items()}
    out[child] = round((after.children_s - before.children_s) / wall_s, 2)
    out["machine"] = round((after.machine_s - before.machine_s) / wall_s, 2)
    out["cores"] = os.cpu_count() or 0
    return out
