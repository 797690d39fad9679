"""The hypothesis profiles of the fuzz tests: `ci` (the default) is small and derandomized, so `make test`
stays bounded and a failure is the same failure on every run; `long` (TRITONFLEET_FUZZ=long) explores
many more examples with fresh randomness, for a run by hand:

    TRITONFLEET_FUZZ=long .venv/bin/pytest tests/fuzz -p no:randomly

Examples never have a deadline: on a loaded 2-core machine a slow example is not a failure.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Examples that start from real servers (the through-the-gateway cases) are few and each costs a round
# trip; the scale of each test's own max_examples is set per test with `examples()`.
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=2_000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PROFILE = os.environ.get("TRITONFLEET_FUZZ", "ci")
settings.load_profile(PROFILE)


def examples(ci: int, long: int) -> int:
    """How many examples a test runs under the active profile."""
    return long if PROFILE == "long" else ci
