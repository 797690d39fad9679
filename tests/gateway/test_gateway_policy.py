"""The picker on its own: power of two choices, fewer outstanding first, then latency, then recency."""

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from gateway import policy
from gateway.backends import WARMUP_SAMPLES, Backend, BackendPool
from gateway.metrics import GatewayMetrics


@dataclass(eq=False)
class Pod:
    name: str
    inflight: int = 0
    ewma_latency_s: float = 0.0
    last_pick: int = 0


def test_no_candidates_gives_none():
    assert policy.pick([]) is None


def test_single_candidate_is_picked_whatever_its_load():
    pod = Pod("a", inflight=50)
    assert policy.pick([pod]) is pod


def test_fewer_outstanding_wins_between_pods_of_similar_speed():
    busy = Pod("busy", inflight=3, ewma_latency_s=0.010, last_pick=0)
    idle = Pod("idle", inflight=1, ewma_latency_s=0.015, last_pick=100)
    assert policy.better(busy, idle) is idle
    assert policy.better(idle, busy) is idle


def test_a_clearly_slower_pod_gets_work_only_when_it_would_answer_sooner():
    fast = Pod("fast", inflight=2, ewma_latency_s=0.010, last_pick=10)
    slow = Pod("slow", inflight=0, ewma_latency_s=0.030, last_pick=5)
    # fast: 3 x 10 ms expected, slow: 1 x 30 ms: a tie goes to the fast pod.
    assert policy.better(slow, fast, clock=11, probe_after=8) is fast
    assert policy.better(fast, slow, clock=11, probe_after=8) is fast
    fast.inflight = 3  # now 40 ms against 30 ms
    assert policy.better(fast, slow, clock=11, probe_after=8) is slow


def test_between_idle_pods_latency_does_not_decide():
    fast = Pod("fast", ewma_latency_s=0.010, last_pick=10)
    slow = Pod("slow", ewma_latency_s=0.030, last_pick=5)
    assert policy.better(fast, slow, clock=11, probe_after=8) is slow


def test_a_much_slower_pod_loses_even_with_fewer_outstanding():
    busy = Pod("busy", inflight=3, ewma_latency_s=0.001, last_pick=0)
    idle = Pod("idle", inflight=1, ewma_latency_s=0.5, last_pick=100)
    assert policy.better(busy, idle) is busy


def test_slow_pod_is_probed_after_enough_picks_without_one():
    fast = Pod("fast", inflight=1, ewma_latency_s=0.010, last_pick=30)
    slow = Pod("slow", inflight=1, ewma_latency_s=0.030, last_pick=10)
    assert policy.better(fast, slow, clock=30, probe_after=12) is slow


def test_small_latency_differences_fall_back_to_least_recently_picked():
    a = Pod("a", ewma_latency_s=0.010, last_pick=5)
    b = Pod("b", ewma_latency_s=0.012, last_pick=2)
    assert policy.better(a, b) is b


def test_the_two_sampled_are_distinct_and_the_busiest_is_never_picked():
    rng = random.Random(7)
    pods = [Pod("a", inflight=0), Pod("b", inflight=1), Pod("c", inflight=2)]
    picks = Counter(policy.pick(pods, rng).name for _ in range(3000))
    # Two distinct samples: the pod with most outstanding always loses to the other one sampled.
    assert picks["c"] == 0
    assert picks["a"] > picks["b"] > 0


def test_sequential_picks_with_recency_spread_evenly():
    rng = random.Random(3)
    pods = [Pod(name) for name in "abc"]
    counts = Counter()
    for clock in range(1, 601):
        chosen = policy.pick(pods, rng, clock=clock)
        chosen.last_pick = clock
        counts[chosen.name] += 1
    assert all(abs(count / 600 - 1 / 3) <= 0.05 for count in counts.values()), counts


@pytest.mark.parametrize("previous, sample, expected", [(0.0, 0.5, 0.5), (1.0, 2.0, 1.2)])
def test_ewma(previous, sample, expected):
    assert policy.ewma(previous, sample) == pytest.approx(expected)


def test_latency_is_averaged_per_place_in_line():
    # A pod answering in 30 ms with two requests ahead of it is a 10 ms pod with a queue.
    pool = BackendPool(GatewayMetrics())
    pod = Backend(address="pod:8001", channel=None)
    for _ in range(WARMUP_SAMPLES + 3):
        pool.hold(pod)
        pool.release(pod, 0.030, ahead=2)
    assert pod.ewma_latency_s == pytest.approx(0.010)
    assert pod.inflight == 0
