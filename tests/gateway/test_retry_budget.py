"""The retry budget on its own, with a clock the test moves: how many retries the traffic has earned."""

from __future__ import annotations

from gateway.routing.lifecycle import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def retries_allowed(budget: RetryBudget, wanted: int) -> int:
    return sum(budget.withdraw() for _ in range(wanted))


def test_a_pod_lost_with_many_calls_on_it_gets_them_all_retried_when_traffic_earned_it():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, reserve=10, clock=clock)
    for _ in range(5):  # 5 s at 400 requests/s
        for _ in range(400):
            budget.deposit()
        clock.now += 1
    # A hung pod gives back the ~230 calls it held: 20% of 2,000 requests plus the reserve covers them.
    assert retries_allowed(budget, 230) == 230


def test_retries_stay_bounded_by_the_ratio_over_the_window():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, reserve=10, clock=clock)
    for _ in range(1000):
        budget.deposit()
    assert retries_allowed(budget, 1000) == 210  # the reserve plus 0.2 per request, no more
    for _ in range(100):
        budget.deposit()
    assert retries_allowed(budget, 1000) == 20


def test_what_was_earned_long_ago_no_longer_raises_the_cap():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, reserve=10, clock=clock)
    for _ in range(1000):
        budget.deposit()
    clock.now += 60  # a quiet minute: the window holds none of those requests
    budget.deposit()
    assert budget.capacity == 10 + 0.2
    assert retries_allowed(budget, 1000) == 10


def test_no_ratio_leaves_only_the_reserve():
    budget = RetryBudget(ratio=0.0, reserve=1, clock=Clock())
    for _ in range(100):
        budget.deposit()
    assert retries_allowed(budget, 5) == 1
