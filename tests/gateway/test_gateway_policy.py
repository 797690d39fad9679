"""The picker on its own: power of two choices, fewer outstanding first, then latency, then recency."""

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from gateway.routing import policy
from gateway.fleet.backends import SETTLING_SAMPLES, WARMUP_SAMPLES, Backend, BackendPool
from gateway.metrics import GatewayMetrics


@dataclass(eq=False)
class Pod:
    name: str
    inflight: int = 0
    latency_by_load: dict[str, list[float]] = field(default_factory=dict)
    last_pick: int = 0


MODEL = "detector"


def pod(name: str, inflight: int = 0, latency: float = 0.0, last_pick: int = 0, levels: int = 1) -> Pod:
    """A pod measured at `latency` for MODEL at its first `levels` load levels (flat: parallel instances)."""
    candidate = Pod(name, inflight=inflight, last_pick=last_pick)
    if latency:
        candidate.latency_by_load[MODEL] = [latency] * levels + [0.0] * (policy.LOAD_LEVELS - levels)
    return candidate


def test_no_candidates_gives_none():
    assert policy.pick([], MODEL) is None


def test_single_candidate_is_picked_whatever_its_load():
    busy = pod("a", inflight=50)
    assert policy.pick([busy], MODEL) is busy


def test_fewer_outstanding_wins_between_pods_of_similar_speed():
    busy = pod("busy", inflight=3, latency=0.010, last_pick=0)
    idle = pod("idle", inflight=1, latency=0.014, last_pick=100)
    assert policy.better(busy, idle, MODEL) is idle
    assert policy.better(idle, busy, MODEL) is idle


def test_a_clearly_slower_pod_gets_work_only_when_it_would_answer_sooner():
    fast = pod("fast", inflight=2, latency=0.010, last_pick=10)
    slow = pod("slow", inflight=0, latency=0.030, last_pick=5)
    # fast, measured with nothing ahead only: 3 x 10 ms expected; slow: 30 ms. A tie goes to the fast pod.
    assert policy.better(slow, fast, MODEL, clock=11, probe_after=8) is fast
    assert policy.better(fast, slow, MODEL, clock=11, probe_after=8) is fast
    fast.inflight = 3  # now 40 ms against 30 ms
    assert policy.better(fast, slow, MODEL, clock=11, probe_after=8) is slow


def test_a_pod_serving_requests_in_parallel_keeps_its_work_while_its_measured_latency_stays_low():
    # 10 ms whether 0 or 3 requests were ahead (four model instances); the other pod takes 25 ms idle.
    fast = pod("fast", inflight=3, latency=0.010, last_pick=10, levels=4)
    slow = pod("slow", inflight=0, latency=0.025, last_pick=5)
    assert policy.better(fast, slow, MODEL, clock=11, probe_after=100) is fast
    # Beyond what was measured, the deepest measured level is scaled: 10 ms x 10 / 4 = 25 ms, a tie...
    fast.inflight = 9
    assert policy.better(slow, fast, MODEL, clock=11, probe_after=100) is fast
    fast.inflight = 10  # ...then 27.5 ms against 25 ms
    assert policy.better(fast, slow, MODEL, clock=11, probe_after=100) is slow


@pytest.mark.parametrize("levels, outstanding, expected", [
    ({}, 0, 0.0),                      # nothing measured: unknown
    ({0: 0.010}, 0, 0.010),            # measured at that level
    ({0: 0.010, 2: 0.012}, 2, 0.012),  # measured at that level, whatever is below
    ({0: 0.010}, 3, 0.040),            # from the level below, as if served one after another
    ({0: 0.010, 2: 0.012}, 5, 0.024),  # from the nearest level below: 12 ms x 6 / 3
    ({3: 0.020}, 1, 0.020),            # nothing below: the nearest level above
    ({policy.LOAD_LEVELS - 1: 0.032}, 31, 0.064),  # deeper than the last level: scaled from it
])
def test_expected_latency(levels, outstanding, expected):
    by_load = [0.0] * policy.LOAD_LEVELS
    for level, latency in levels.items():
        by_load[level] = latency
    assert policy.expected_latency(by_load, outstanding) == pytest.approx(expected)


def test_between_idle_pods_latency_does_not_decide():
    fast = pod("fast", latency=0.010, last_pick=10)
    slow = pod("slow", latency=0.030, last_pick=5)
    assert policy.better(fast, slow, MODEL, clock=11, probe_after=100) is slow  # taking turns
    fast.inflight = 1  # now it does: 2 x 10 ms expected against 30 ms
    assert policy.better(fast, slow, MODEL, clock=11, probe_after=100) is fast


def test_in_a_loaded_fleet_an_idle_slow_pod_does_not_win_over_an_idle_fast_one_by_taking_turns():
    # A third pod is busy: the gateway is under load, and the fast pod's figures are fresh.
    fast = pod("fast", latency=0.004, last_pick=10)
    slow = pod("slow", latency=0.008, last_pick=5)
    busy = pod("busy", inflight=4, latency=0.004, last_pick=11)
    assert policy.better(fast, slow, MODEL, clock=12, probe_after=100, loaded=True) is fast
    assert policy.better(fast, slow, MODEL, clock=12, probe_after=100, loaded=False) is slow
    # pick() tells loaded from any candidate's outstanding requests, not only the two sampled.
    for seed in range(20):
        chosen = policy.pick([fast, slow, busy], MODEL, random.Random(seed), clock=12)
        assert chosen is fast, seed
    busy.inflight = 0  # an idle fleet takes turns again
    assert policy.pick([fast, slow, busy], MODEL, random.Random(0), clock=13) is slow


def test_a_pods_speed_is_its_best_level_not_a_noisy_idle_one():
    # Always busy, this pod's idle level was measured once, at a bad moment; its loaded levels say 10 ms.
    fast = pod("fast", inflight=1, latency=0.010, levels=4)
    fast.latency_by_load[MODEL][0] = 0.024
    slow = pod("slow", inflight=1, latency=0.025, last_pick=0)
    assert policy.better(slow, fast, MODEL, clock=11, probe_after=100) is fast


def test_a_much_slower_pod_loses_even_with_fewer_outstanding():
    busy = pod("busy", inflight=3, latency=0.001, last_pick=0)
    idle = pod("idle", inflight=1, latency=0.5, last_pick=100)
    assert policy.better(busy, idle, MODEL) is busy


def test_an_unmeasured_pod_is_judged_by_its_outstanding_requests():
    measured = pod("measured", inflight=2, latency=0.001)
    new = pod("new", inflight=0)
    assert policy.better(measured, new, MODEL) is new


def test_latency_counts_only_for_the_model_it_was_measured_on():
    busy = pod("busy", inflight=1, latency=0.001)
    other = pod("other", inflight=0, last_pick=5)
    other.latency_by_load["another model"] = [0.5] * policy.LOAD_LEVELS
    assert policy.better(busy, other, MODEL) is other  # fewer outstanding: nothing known for MODEL
    assert policy.better(busy, other, "another model") is other  # nothing known about busy for it
    busy.latency_by_load["another model"] = [0.001] * policy.LOAD_LEVELS
    assert policy.better(busy, other, "another model") is busy


def test_slow_pod_is_probed_after_enough_picks_without_one():
    fast = pod("fast", inflight=1, latency=0.010, last_pick=30)
    slow = pod("slow", inflight=1, latency=0.030, last_pick=10)
    assert policy.better(fast, slow, MODEL, clock=29, probe_after=20) is fast
    assert policy.better(fast, slow, MODEL, clock=30, probe_after=20) is slow


def test_a_slow_pod_beside_busy_fast_ones_gets_only_its_rare_probes():
    # Two fast pods with four parallel instances each, loaded with 3 and 4 requests; the slow one idle.
    rng = random.Random(11)
    pods = [pod("a", inflight=3, latency=0.004, levels=5), pod("b", inflight=4, latency=0.004, levels=5),
            pod("slow", inflight=0, latency=0.008)]
    picks = Counter()
    for clock in range(1, 3001):
        chosen = policy.pick(pods, MODEL, rng, clock=clock)
        chosen.last_pick = clock
        picks[chosen.name] += 1
    probe_after = policy.PROBE_ROUNDS * len(pods)
    assert 0 < picks["slow"] <= 3000 // probe_after + 1, picks


def test_sub_millisecond_differences_are_noise_whatever_their_ratio():
    a = pod("a", inflight=1, latency=0.0004)
    b = pod("b", inflight=0, latency=0.0010)  # 2.5x slower, but by 0.6 ms
    assert policy.better(a, b, MODEL) is b
    b.latency_by_load[MODEL][0] = 0.0015  # by 1.1 ms: clearly slower, and a 1.5 ms wait beats 0.8 ms
    assert policy.better(a, b, MODEL) is a


def test_small_latency_differences_fall_back_to_least_recently_picked():
    a = pod("a", latency=0.010, last_pick=5)
    b = pod("b", latency=0.012, last_pick=2)
    assert policy.better(a, b, MODEL) is b
    a.inflight = b.inflight = 1
    assert policy.better(a, b, MODEL) is b


def test_the_two_sampled_are_distinct_and_the_busiest_is_never_picked():
    rng = random.Random(7)
    pods = [pod("a", inflight=0), pod("b", inflight=1), pod("c", inflight=2)]
    picks = Counter(policy.pick(pods, MODEL, rng, clock=clock).name for clock in range(3000))
    # Two distinct samples: the pod with most outstanding always loses to the other one sampled.
    assert picks["c"] == 0
    assert picks["a"] > picks["b"] > 0


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_sequential_picks_between_idle_pods_take_turns(seed):
    # A one-request-at-a-time client or a camera stream: every pod idle at each pick.
    rng = random.Random(seed)
    pods = [pod(name) for name in "abc"]
    order = []
    for clock in range(1, 151):
        chosen = policy.pick(pods, MODEL, rng, clock=clock)
        chosen.last_pick = clock
        order.append(chosen.name)
    assert Counter(order) == {"a": 50, "b": 50, "c": 50}
    assert all(order[i] != order[i + 1] for i in range(len(order) - 1))


@pytest.mark.parametrize("previous, sample, expected", [(0.0, 0.5, 0.5), (1.0, 2.0, 1.2)])
def test_ewma(previous, sample, expected):
    assert policy.ewma(previous, sample) == pytest.approx(expected)


def test_a_latency_spike_moves_the_average_a_little_a_lasting_slowdown_all_the_way():
    assert policy.latency_average(0.0, 0.050) == pytest.approx(0.050)  # the first sample stands alone
    after_spike = policy.latency_average(0.001, 0.050)  # a 50 ms hiccup on a 1 ms pod
    assert after_spike == pytest.approx(0.001 + 0.2 * (policy.SPIKE_CAP - 1) * 0.001)
    assert after_spike < policy.SLOWER_FACTOR * 0.001  # not "clearly slower" for one hiccup
    average = 0.001
    for _ in range(30):  # the pod really is 3x slower now
        average = policy.latency_average(average, 0.003)
    assert average == pytest.approx(0.003, rel=0.02)
    # Faster: not capped, and weighed more, so that a pod avoided (and only probed) comes back soon.
    assert policy.latency_average(0.003, 0.001) == pytest.approx(0.003 - policy.RECOVERY_WEIGHT * 0.002)


def answer(pool: BackendPool, backend: Backend, latency: float | None, ahead: int = 0, model: str = MODEL):
    pool.hold(backend)
    pool.release(backend, latency, ahead=ahead, model=model)


def test_latency_is_averaged_per_model_and_load_level():
    pool = BackendPool(GatewayMetrics())
    backend = Backend(address="pod:8001", channel=None)
    for _ in range(WARMUP_SAMPLES):  # a model's first answers include its cold start: not counted
        answer(pool, backend, 1.0)
    assert backend.latency_levels == {} and backend.latency_by_load == {}
    for latency, ahead in [(0.030, 2), (0.010, 0), (0.014, 0), (0.050, policy.LOAD_LEVELS + 5)]:
        answer(pool, backend, latency, ahead)
    levels = backend.latency_levels[MODEL]
    assert levels[2] == pytest.approx(0.030)
    assert levels[0] == pytest.approx(0.010 + 0.2 * (0.014 - 0.010))
    assert levels[-1] == pytest.approx(0.050)  # deeper queues share the last level
    assert levels[1] == 0.0
    # The picker sees a model's figures once they have settled over SETTLING_SAMPLES answers.
    assert MODEL not in backend.latency_by_load
    for _ in range(SETTLING_SAMPLES - 4):
        answer(pool, backend, 0.0108)
    assert backend.latency_by_load[MODEL] is levels
    for _ in range(WARMUP_SAMPLES + SETTLING_SAMPLES):  # another model has its own warm-up and figures
        answer(pool, backend, 0.002, model="preprocess")
    assert backend.latency_by_load["preprocess"][0] == pytest.approx(0.002)
    assert backend.latency_by_load[MODEL][0] == pytest.approx(0.0108)
    answer(pool, backend, None)  # a failure has no latency to count
    assert backend.latency_by_load[MODEL][0] == pytest.approx(0.0108)
    assert backend.inflight == 0


@pytest.mark.parametrize("seed", range(40))
def test_equal_pods_with_noisy_latencies_share_a_sequential_client_evenly(seed):
    # One request at a time to two pods of the same speed (2 ms, +-15%) on a noisy node: one answer
    # in ten is 2 to 15 ms late. Spikes, and the first answers, must not mark either pod slower.
    rng = random.Random(seed)
    pool = BackendPool(GatewayMetrics())
    pods = [Backend(address=f"pod-{name}:8001", channel=None) for name in "ab"]
    picks = Counter()
    for clock in range(1, 501):
        chosen = policy.pick(pods, MODEL, rng, clock=clock)
        chosen.last_pick = clock
        picks[chosen.address] += 1
        late = rng.uniform(0.002, 0.015) if rng.random() < 0.1 else 0.0
        answer(pool, chosen, 0.002 * (0.85 + 0.3 * rng.random()) + late)
    assert abs(picks["pod-a:8001"] / 500 - 0.5) <= 0.05, picks
