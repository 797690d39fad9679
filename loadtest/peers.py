"""Starting several load generators together: wait until every peer is up, then start on a shared beat.

The chart's load-test Job runs N pods as one Indexed Job; each has a stable DNS name under the Job's
headless Service (`<job>-<index>.<service>`), which resolves once that pod exists. A pod that waits
for all N names and then starts at the next multiple of `align_s` seconds of wall-clock time starts
with the others: the names appear within a DNS refresh of each other, and cluster nodes keep their
clocks in step (NTP), so the pods pick the same beat. A pod whose image was slow to pull does not
start alone, early: it is the last name to appear, and everyone waits for it.
"""

from __future__ import annotations

import math
import socket
import time
from typing import Callable


def resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, None)
        return True
    except (socket.gaierror, UnicodeError):
        return False


def wait_for_peers(names: list[str], timeout_s: float, poll_s: float = 1.0,
                   resolve: Callable[[str], bool] = resolves) -> None:
    """Until every name resolves; ValueError naming the missing ones after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    missing = list(names)
    while True:
        missing = [name for name in missing if not resolve(name)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ValueError(f"--wait-for-peers: {len(missing)} of {len(names)} peers did not appear within "
                             f"{timeout_s:g} s: {', '.join(missing)}")
        time.sleep(poll_s)


def next_beat(now: float, align_s: float) -> float:
    """The first multiple of `align_s` at least half a beat away (time for the others to see it)."""
    return math.ceil((now + align_s / 2) / align_s) * align_s


def start_together(names: list[str], timeout_s: float, align_s: float,
                   clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> float:
    """Wait for the peers, then until the shared beat; the wall-clock time the load starts at."""
    wait_for_peers(names, timeout_s)
    beat = next_beat(clock(), align_s)
    while (left := beat - clock()) > 0:
        sleep(min(left, 1.0))
    return beat
