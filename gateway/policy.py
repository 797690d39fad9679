"""The picker: which of the ready pods gets the next request. Pure: no I/O, no clock, no globals.

Power of two choices (gRPC proposal A48, "least request"): sample two candidates, keep the one with
fewer outstanding requests. Sampling two instead of scanning all avoids herding every gateway worker onto
the same momentarily idle pod. A tie between two busy pods (equal, non-zero outstanding) goes to the one
that is clearly faster (EWMA latency): it will drain its queue sooner. Other ties, and every tie between
idle pods, where latency decides only this one request's service time and is mostly noise on a shared
machine, go to whichever was picked less recently, which spreads even a one-request-at-a-time client or a
30-FPS camera stream evenly instead of leaving it to chance. A pod avoided for its latency is still tried
once it has gone `probe_after` picks without one, so that a pod that was slow once (a cold start) gets
the chance to show it is fast again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol


class Candidate(Protocol):
    inflight: int
    ewma_latency_s: float
    last_pick: int


# One pod counts as "clearly slower" when its latency average is twice the other's or more. Below
# that, latency differences on a shared machine are noise and would skew an idle fleet.
SLOWER_FACTOR = 2.0


def better(a: Candidate, b: Candidate, clock: int = 0, probe_after: int = 0) -> Candidate:
    """The preferable of two candidates: fewer outstanding, then (both busy) clearly faster, then less
    recently picked.

    `clock` is the number of picks so far; a slower pod last picked `probe_after` or more picks ago is
    not held back by its latency (0 turns probing off).
    """
    if a.inflight != b.inflight:
        return a if a.inflight < b.inflight else b
    if a.inflight > 0 and a.ewma_latency_s > 0 and b.ewma_latency_s > 0:
        slower, faster = (a, b) if a.ewma_latency_s > b.ewma_latency_s else (b, a)
        if slower.ewma_latency_s > SLOWER_FACTOR * faster.ewma_latency_s:
            due_for_probe = probe_after > 0 and clock - slower.last_pick >= probe_after
            if not due_for_probe:
                return faster
    return a if a.last_pick <= b.last_pick else b


def pick(candidates: Sequence[Candidate], rng: random.Random | None = None, clock: int = 0) -> Candidate | None:
    """Power of two choices over `candidates`; None when there are none. `clock`: picks so far."""
    count = len(candidates)
    if count == 0:
        return None
    if count == 1:
        return candidates[0]
    rng = rng or random
    first = rng.randrange(count)
    second = rng.randrange(count - 1)
    if second >= first:
        second += 1
    # A slow pod is probed about once per few rounds over the fleet.
    return better(candidates[first], candidates[second], clock, probe_after=2 * count)


def ewma(previous: float, sample: float, weight: float = 0.2) -> float:
    """Exponentially weighted moving average; the first sample stands alone."""
    return sample if previous <= 0 else previous + weight * (sample - previous)
