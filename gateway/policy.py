"""The picker: which of the ready pods gets the next request. Pure: no I/O, no clock, no globals.

Power of two choices (gRPC proposal A48, "least request"): sample two candidates, keep the one with
fewer outstanding requests. Sampling two instead of scanning all avoids herding every gateway worker onto
the same momentarily idle pod. When one of the two is clearly slower (its latency average at least
twice the other's: a pod on a busy node, a slower GPU), the one expected to answer a new request sooner
wins, (outstanding + 1) x latency, so a slow pod takes work only while the fast ones are queued deep
enough to be slower still. Between pods of similar speed, and between two idle pods (where latency
decides only this one request's service time, and a pod's average may come from another model), it
is mostly noise: fewer outstanding wins, then whichever was picked less recently, which spreads even a
one-request-at-a-time client or a 30-FPS camera stream evenly instead of leaving it to chance. A pod
avoided for its latency is still tried once it has gone `probe_after` picks without one, so that a pod
that was slow once (a cold start) gets the chance to show it is fast again.
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
# A pod avoided for its latency is tried again after this many picks per pod in the fleet.
PROBE_ROUNDS = 8


def better(a: Candidate, b: Candidate, clock: int = 0, probe_after: int = 0) -> Candidate:
    """The preferable of two candidates.

    When either has work outstanding and one is clearly slower (latency average SLOWER_FACTOR times
    the other's or more), the one expected to finish a new request sooner wins: (outstanding + 1) x
    latency. Otherwise fewer outstanding wins, then the less recently picked. `clock` is the number of
    picks so far; a slower pod last picked `probe_after` or more picks ago is not held back by its
    latency (0: no probing).
    """
    if (a.inflight or b.inflight) and a.ewma_latency_s > 0 and b.ewma_latency_s > 0:
        slower, faster = (a, b) if a.ewma_latency_s > b.ewma_latency_s else (b, a)
        if slower.ewma_latency_s > SLOWER_FACTOR * faster.ewma_latency_s:
            due_for_probe = probe_after > 0 and clock - slower.last_pick >= probe_after
            if not due_for_probe:
                slower_cost = (slower.inflight + 1) * slower.ewma_latency_s
                faster_cost = (faster.inflight + 1) * faster.ewma_latency_s
                return faster if faster_cost <= slower_cost else slower
    if a.inflight != b.inflight:
        return a if a.inflight < b.inflight else b
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
    # A slow pod is probed about once per several rounds over the fleet.
    return better(candidates[first], candidates[second], clock, probe_after=PROBE_ROUNDS * count)


def ewma(previous: float, sample: float, weight: float = 0.2) -> float:
    """Exponentially weighted moving average; the first sample stands alone."""
    return sample if previous <= 0 else previous + weight * (sample - previous)
