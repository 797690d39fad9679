"""The picker: which of the ready pods gets the next request. Pure: no I/O, no clock, no globals.

Power of two choices (gRPC proposal A48, "least request"): sample two candidates, keep the one with
fewer outstanding requests. Sampling two instead of scanning all avoids herding every gateway worker onto
the same momentarily idle pod.

While the fleet is loaded (any of its pods has work outstanding) and one of the two is clearly slower
(its best measured latency at least SLOWER_FACTOR times the other's: a pod on a busy node, a slower
GPU), the one expected to answer this request sooner wins. The expectation comes from latencies
measured per load level (how many requests were already outstanding on the pod when one was sent),
because a Triton pod serves several requests at once (model instances, dynamic batching): its latency
with three ahead may be no worse than with none, and only measuring it says so. Latency is kept per
model: the same pod answers a 1 ms preprocessing model and a 30 ms detector. A slow pod then takes
work only while the fast ones are loaded deep enough to be slower still.

Between pods of similar speed latency differences are noise, and while no pod has work outstanding
they are left out too: fewer outstanding wins, then whichever was picked less recently, which spreads
even a one-request-at-a-time client or a 30-FPS camera stream evenly instead of leaving it to chance.
(Letting latency decide in an idle fleet too would let one unlucky figure keep a pod of the same speed
out of a sequential client's requests until its next probe: taking turns is what keeps its figures
fresh. Under load the fast pods' figures stay fresh anyway, and an idle slow pod must not win over an
idle fast one only because it was picked less recently.) A pod avoided for its latency is still tried
once it has gone `probe_after` picks without one, so that a pod that was slow once (a cold start, a
noisy neighbour) gets the chance to show it is fast again; rarely, since each probe is a slow answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Protocol


class Candidate(Protocol):
    inflight: int
    # Per model: the latency average of requests sent with k others outstanding, at index k (the last
    # index: k or more); 0.0 where none was measured yet.
    latency_by_load: Mapping[str, Sequence[float]]
    last_pick: int


# How many load levels a pod's latency is kept for; deeper queues share the last level.
LOAD_LEVELS = 16
# One pod counts as "clearly slower" when its best latency is this many times the other's or more,
# and at least SLOWER_GAP_S more. Below that, latency differences on a shared node are scheduling
# noise (a 1 ms model's average wanders by a third there) and would skew a fleet of equal pods.
SLOWER_FACTOR = 1.5
SLOWER_GAP_S = 0.001
# A pod avoided for its latency is tried again after this many picks per pod in the fleet: for three
# pods, about one request in 200.
PROBE_ROUNDS = 64
# A latency sample counts for at most SPIKE_CAP times the average so far; one below the average
# counts with RECOVERY_WEIGHT (see latency_average).
SPIKE_CAP = 1.5
RECOVERY_WEIGHT = 0.5
UNMEASURED: Sequence[float] = (0.0,)


def expected_latency(latency_by_load: Sequence[float], outstanding: int) -> float:
    """The latency a request sent now, behind `outstanding` others, is expected to have; 0.0: unknown.

    The measured level at or nearest below `outstanding` stands for it, scaled as if the extra
    requests were served one after another (pessimistic until that level is measured itself). With
    nothing measured below, the nearest level above it (more ahead is never faster).
    """
    level = min(outstanding, len(latency_by_load) - 1)
    for k in range(level, -1, -1):
        if latency_by_load[k] > 0:
            return latency_by_load[k] * (outstanding + 1) / (k + 1)
    for k in range(level + 1, len(latency_by_load)):
        if latency_by_load[k] > 0:
            return latency_by_load[k]
    return 0.0


def better(a: Candidate, b: Candidate, model: str, clock: int = 0, probe_after: int = 0,
           loaded: bool = False) -> Candidate:
    """The preferable of two candidates for a request for `model`.

    When the fleet is `loaded` or either has work outstanding, and one is clearly slower (its best
    latency for `model`, at any load level, SLOWER_FACTOR times the other's or more, and SLOWER_GAP_S
    more), the one expected to answer a new request sooner wins. Otherwise, or while either is unmeasured, fewer outstanding
    wins, then the less recently picked. `clock` is the number of picks so far; a slower pod last
    picked `probe_after` or more picks ago is not held back by its latency (0: no probing).
    """
    if loaded or a.inflight or b.inflight:
        levels_a = a.latency_by_load.get(model, UNMEASURED)
        levels_b = b.latency_by_load.get(model, UNMEASURED)
        # The best level stands for a pod's speed: queueing only adds to it, and an idle level may be
        # rarely measured (and so noisy) on a pod that is always busy.
        base_a = min((v for v in levels_a if v > 0), default=0.0)
        base_b = min((v for v in levels_b if v > 0), default=0.0)
        if base_a > 0 and base_b > 0:
            slower, slower_levels, slower_base, faster, faster_levels, faster_base = (
                (a, levels_a, base_a, b, levels_b, base_b) if base_a >= base_b
                else (b, levels_b, base_b, a, levels_a, base_a))
            if slower_base >= max(SLOWER_FACTOR * faster_base, faster_base + SLOWER_GAP_S) and not (
                    probe_after > 0 and clock - slower.last_pick >= probe_after):
                faster_wait = expected_latency(faster_levels, faster.inflight)
                slower_wait = expected_latency(slower_levels, slower.inflight)
                return faster if faster_wait <= slower_wait else slower
    if a.inflight != b.inflight:
        return a if a.inflight < b.inflight else b
    return a if a.last_pick <= b.last_pick else b


def pick(candidates: Sequence[Candidate], model: str, rng: random.Random | None = None,
         clock: int = 0) -> Candidate | None:
    """Power of two choices over `candidates` for `model`; None when there are none. `clock`: picks so far."""
    count = len(candidates)
    if count == 0:
        return None
    if count == 1:
        return candidates[0]
    rng = rng or random
    # The first of the two in turn, the second at random: between idle pods the one picked less
    # recently wins, so taking turns visits an idle fleet evenly (a one-at-a-time client, a camera
    # stream), where two random samples would leave a share to chance.
    first = clock % count
    second = rng.randrange(count - 1)
    if second >= first:
        second += 1
    a, b = candidates[first], candidates[second]
    loaded = bool(a.inflight or b.inflight) or any(c.inflight for c in candidates)
    return better(a, b, model, clock, probe_after=PROBE_ROUNDS * count, loaded=loaded)


def ewma(previous: float, sample: float, weight: float = 0.2) -> float:
    """Exponentially weighted moving average; the first sample stands alone."""
    return sample if previous <= 0 else previous + weight * (sample - previous)


def latency_average(previous: float, sample: float) -> float:
    """The latency average after one more answer. A sample above the average counts for at most
    SPIKE_CAP times it, with the usual weight; one below it counts with RECOVERY_WEIGHT. A hiccup (a
    garbage collection, a preempted CPU) then moves a pod's average a little instead of making it
    "clearly slower", a pod that really turned slower still climbs there in a few answers, and a pod
    avoided for its latency, which only probes measure, is readmitted after one or two fast ones."""
    if previous <= 0:
        return sample
    if sample < previous:
        return ewma(previous, sample, RECOVERY_WEIGHT)
    return ewma(previous, min(sample, SPIKE_CAP * previous))
