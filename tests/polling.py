"""Waiting on a condition instead of on the clock: the one bounded poll every test uses.

A test that needs something to have happened (a server counted a request, a pod took traffic, a
file appeared) asks for it again and again until it holds or the bound passes. The bound is generous,
since a loaded CI machine may take long; a test never asserts how long the wait took.
"""

from __future__ import annotations

import time


def poll(condition, timeout: float = 20.0, interval: float = 0.05):
    """The first truthy value of `condition()` within `timeout` seconds; else its last, falsy, value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_until(condition, what: str, timeout: float = 60.0, interval: float = 0.05):
    """Like `poll`, but a condition that never came true fails the test, saying what was awaited."""
    value = poll(condition, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return value
