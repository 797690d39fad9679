"""The one helper every started program goes through: a bounded wait that reports a child's death
with its log, a stop that leaves no process of its group behind, and a view of what runs."""

from __future__ import annotations

import socket
import sys

import pytest

from tritonfleet.processes import ChildProcess, ProcessExited, accepts_connections, command_lines_containing, group_alive

# A parent that starts a grandchild in its group and ignores SIGTERM: what a stop must still end.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]])
print("started", flush=True)
time.sleep(600)
"""


def test_a_child_that_dies_before_it_is_ready_is_reported_with_its_log(tmp_path):
    child = ChildProcess("crasher", [sys.executable, "-c", "print('bad config line 3'); raise SystemExit(3)"],
                         tmp_path / "crasher.log")
    with pytest.raises(ProcessExited, match=r"(?s)crasher exited with code 3 .*bad config line 3"):
        child.wait_until(lambda: False, timeout=60)


def test_stop_ends_the_whole_group_even_when_the_parent_ignores_sigterm(tmp_path):
    marker = f"tritonfleet-test-{tmp_path.name}"
    log = tmp_path / "stubborn.log"
    child = ChildProcess("stubborn", [sys.executable, "-c", STUBBORN, marker], log)
    try:
        child.wait_until(lambda: "started" in log.read_text(), timeout=60, what="started")
        assert len(command_lines_containing(marker)) == 2  # the parent and its grandchild
    finally:
        child.stop(grace=1.0)
    assert not group_alive(child.process)
    assert command_lines_containing(marker) == []


def test_listening_is_seen_once_the_port_accepts(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        assert not accepts_connections(address)
        listener.listen()
        assert accepts_connections(address)
