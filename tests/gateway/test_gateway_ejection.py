"""Passive ejection and readmission with backoff (`BackendPool.eject`, `HealthChecker.check`), on the
gateway's own objects with the clock under the test's control: each failure in a row doubles the
pod's time out, up to `eject_max_s`; an answer resets it; a pod out of the fleet is not health-checked
until its backoff is over, and takes requests again once a check has found it live."""

from __future__ import annotations

import asyncio
import types

import pytest

from gateway.fleet import backends as backends_module
from gateway.fleet import health as health_module
from gateway.fleet.backends import BackendPool
from gateway.fleet.health import HealthChecker, ModelCatalog, ModelTraits
from gateway.metrics import GatewayMetrics

POD, OTHER = "10.0.0.1:8001", "10.0.0.2:8001"


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    fake = types.SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(backends_module, "time", fake)
    monkeypatch.setattr(health_module, "time", fake)
    return now


def _pool() -> BackendPool:
    pool = BackendPool(GatewayMetrics(), eject_base_s=0.5, eject_max_s=2.0)
    pool.set_addresses({POD, OTHER})
    for backend in pool.backends.values():
        backend.live, backend.ready_models = True, frozenset({"m"})
    pool.invalidate()
    return pool


def _serving(pool: BackendPool) -> set[str]:
    return {backend.address for backend in pool.candidates("m")}


def test_each_failure_in_a_row_doubles_the_backoff_up_to_the_limit_and_an_answer_resets_it(clock):
    async def scenario():
        pool = _pool()
        pod = pool.backends[POD]
        backoffs = []
        for _ in range(4):
            pool.eject(pod, "connection refused")
            backoffs.append(pod.ejected_until - clock[0])
            assert _serving(pool) == {OTHER}
            pool.eject(pod, "the same failure, seen by another call")  # while out: not counted again
            clock[0] = pod.ejected_until
            pod.live = True  # its health check passed
            pool.invalidate()
            assert _serving(pool) == {POD, OTHER}
        ejections = pool.metrics.registry.get_sample_value("tritonfleet_gateway_ejections_total", {"backend": POD})
        pool.release(pool.try_acquire("m", exclude=frozenset({pool.backends[OTHER]})), latency_s=0.01, model="m")
        pool.eject(pod, "a new failure after an answer")
        after_an_answer = pod.ejected_until - clock[0]
        await pool.close()
        return backoffs, ejections, after_an_answer

    backoffs, ejections, after_an_answer = asyncio.run(scenario())
    assert backoffs == [0.5, 1.0, 2.0, 2.0] and ejections == 4
    assert after_an_answer == 0.5


def test_an_ejected_pod_is_checked_again_only_after_its_backoff_and_then_readmitted(clock):
    class Probed(HealthChecker):
        """The real checker, with the pod's answers to ServerLive/ServerReady/ModelReady given by the test."""

        probes = 0

        async def _probe(self, stub):
            self.probes += 1
            return True, True, frozenset({"m"}), frozenset({"m"})

    async def scenario():
        pool = _pool()
        pod = pool.backends[POD]
        catalog = ModelCatalog()
        catalog.traits["m"] = ModelTraits()  # known already: the check reads no config from the pod
        checker = Probed(pool, catalog, interval_s=1.0, timeout_s=1.0)
        pool.eject(pod, "connection reset")
        await checker.check(pod)
        during = (checker.probes, pod.live, _serving(pool))
        clock[0] = pod.ejected_until
        await checker.check(pod)
        after = (checker.probes, pod.live, _serving(pool))
        await pool.close()
        return during, after

    during, after = asyncio.run(scenario())
    assert during == (0, False, {OTHER})
    assert after == (1, True, {POD, OTHER})
