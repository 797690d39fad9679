"""A short soak (tritonfleet/soak.py, the engine of `python -m bench.soak.run`): half a minute of the
mixed load (unary images, camera streams, a client reconnecting in a loop) through the fuzz fleet's
gateway. No call fails, and after the warm-up the gateway holds no more descriptors or threads, and
once the load is over no client connection or call is left open at the gateway."""

from __future__ import annotations

import pytest

from tests.polling import poll
from tritonfleet.soak import SoakLoad, SoakPlan, gateway_gauges, run_soak

pytestmark = pytest.mark.slow

PLAN = SoakPlan(duration_s=30, warmup_s=10, sample_s=5, load=SoakLoad(image_rate=2, cameras=2, camera_fps=2))


def test_a_short_soak_has_no_errors_and_no_descriptor_or_thread_growth(fuzz_gateway):
    report = run_soak(fuzz_gateway, PLAN)
    assert report["errors"] == {}, report["error_examples"]
    assert set(report["calls"]) == {"image", "reconnect", "camera"}
    growth = report["growth"]
    # A descriptor or two may come and go with a connection being opened as the sample is taken.
    assert growth["fd_growth"] <= 2, report["samples"]
    # A pool that starts its worker threads as they are first needed (the event loop's executor) may
    # start one after the warm-up; a thread leaked per connection or call would add one with every
    # reconnect of the loop, many in this half minute.
    assert growth["thread_growth"] <= 1, report["samples"]
    idle = poll(lambda: (gauges := gateway_gauges(fuzz_gateway.metrics_url))["tritonfleet_gateway_client_streams"] == 0
                and gauges["tritonfleet_gateway_active_streams"] == 0)
    assert idle, gateway_gauges(fuzz_gateway.metrics_url)
