"""The health checker's rounds outlive the pods they check: a pod that discovery removes while its
check is on the way (its channel closes under the check) is left alone, and the checker goes on with
the next round, so that the pods discovery lists next are checked and admitted. Found when a
kubernetes listing went from three pods to none and back within 100 ms: the round in flight raised
grpcio's UsageError ("Channel is closed"), the checker's task ended, and no pod was admitted again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from gateway.fleet.backends import BackendPool
from gateway.fleet.health import HealthChecker, ModelCatalog
from gateway.metrics import GatewayMetrics

# Nothing listens there: the checks on it fail as a pod that does not answer.
POD = "127.0.0.1:1"
ROOT = Path(__file__).resolve().parents[2]


# Run in a process of its own: grpcio's asyncio channels, made and closed in a second event loop of a
# process whose other tests used grpcio, can bring the whole process down, and with it a test worker.
REMOVED_MID_CHECK = """
import asyncio, json
from gateway.fleet.backends import BackendPool
from gateway.fleet.health import HealthChecker, ModelCatalog
from gateway.metrics import GatewayMetrics

async def scenario():
    pool = BackendPool(GatewayMetrics())
    checker = HealthChecker(pool, ModelCatalog(), interval_s=1.0, timeout_s=1.0)
    pool.set_addresses({POD})
    removed = pool.backends[POD]
    pool.set_addresses(set())  # the channel closes (with grace) in a task of its own
    await asyncio.sleep(0)
    outcome = "returned"
    try:
        await checker.check(removed)
    except Exception as exc:  # what the round would have died of
        outcome = repr(exc)
    series = [s.labels for s in pool.metrics.backend_up.collect()[0].samples]
    await pool.close()
    return outcome, series

print(json.dumps(asyncio.run(scenario())))
"""


def test_a_pod_removed_while_its_check_runs_is_left_alone_and_leaves_no_series():
    done = subprocess.run([sys.executable, "-c", f"POD = {POD!r}\n" + REMOVED_MID_CHECK], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome, series = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == "returned"
    assert series == []  # a removed pod's tritonfleet_gateway_backend_up is not brought back


def test_a_round_that_fails_does_not_end_the_checker():
    """Whatever a round raises, the next round runs: a background task that ends stops every check."""

    class FirstRoundFails(HealthChecker):
        rounds = 0

        async def check_all(self):
            self.rounds += 1
            if self.rounds == 1:
                raise RuntimeError("the first round fails")

    async def scenario():
        pool = BackendPool(GatewayMetrics())
        checker = FirstRoundFails(pool, ModelCatalog(), interval_s=0.01, timeout_s=1.0)
        task = asyncio.create_task(checker.run())
        for _ in range(500):  # bounded: 500 turns of at least 10 ms each
            if checker.rounds >= 3 or task.done():
                break
            await asyncio.sleep(0.01)
        ended = task.done() and repr(task.exception())
        task.cancel()
        await pool.close()
        return checker.rounds, ended

    rounds, ended = asyncio.run(scenario())
    assert ended is False
    assert rounds >= 3
