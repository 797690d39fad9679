"""The one helper every started program goes through: a bounded wait that reports a child's death
with its log, a stop that leaves no process of its group behind, and a view of what runs."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tritonfleet.processes import (ChildProcess, ProcessExited, accepts_connections, command_lines_containing, group_alive,
                                   spawn, terminate_all)
from tests.polling import wait_until

REPOSITORY = Path(__file__).resolve().parents[2]

# A parent that starts a grandchild in its group and ignores SIGTERM: what a stop must still end.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]])
print("started", flush=True)
time.sleep(600)
"""

# On SIGTERM, a child says so (a file of its own) and, like a server unloading its models, takes its
# time to exit: until every child of the stop has been told, or 20 s. It then writes whether it saw
# them all told, which only happens when the stop tells every child before it waits for any.
SLOW_TO_STOP = """
import pathlib, signal, sys, time
folder, name, count = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def stop(signum, frame):
    (folder / f"{name}.told").touch()
    deadline = time.monotonic() + 20
    while len(list(folder.glob("*.told"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    (folder / f"{name}.saw").write_text(str(len(list(folder.glob("*.told")))))
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
(folder / f"{name}.up").touch()
time.sleep(600)
"""

# A parent whose fork handlers would run in a child it forks, as gRPC's do (they restart its poller,
# whose descriptors the child then closes: "epoll_wait error: Bad file descriptor", SIGABRT).
FORK_HANDLER_PARENT = """
import os, pathlib, sys
from tritonfleet.processes import spawn, terminate
marker = pathlib.Path(sys.argv[1])
os.register_at_fork(after_in_child=lambda: marker.write_text("fork handlers ran in a child"))
child = spawn([sys.executable, "-c", "pass"], marker.with_suffix(".log"))
child.wait()
print("exit", child.returncode, flush=True)
"""

# A child that writes a file when it is sent SIGTERM, then exits.
TERM_WATCHER = """
import pathlib, signal, sys, time
def told(signum, frame):
    pathlib.Path(sys.argv[1]).write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, told)
pathlib.Path(sys.argv[1] + ".up").touch()
time.sleep(600)
"""


def test_a_child_is_started_without_running_the_parents_fork_handlers(tmp_path):
    marker = tmp_path / "marker"
    done = subprocess.run([sys.executable, "-c", FORK_HANDLER_PARENT, str(marker)], capture_output=True,
                          text=True, timeout=120, cwd=REPOSITORY)
    assert done.stdout.strip() == "exit 0", done.stderr
    assert not marker.exists(), marker.read_text()


def test_a_child_is_sent_sigterm_when_the_thread_that_started_it_ends(tmp_path):
    marker = tmp_path / "told"
    children = []

    def start():
        # The thread ends once the child handles SIGTERM, so the signal cannot beat its handler.
        children.append(spawn([sys.executable, "-c", TERM_WATCHER, str(marker)], tmp_path / "watcher.log"))
        wait_until(lambda: marker.with_suffix(".up").exists(), "the child to start")

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    try:
        wait_until(lambda: marker.exists(), "the child to be sent SIGTERM")
        assert marker.read_text() == "SIGTERM"
    finally:
        terminate_all(children, grace=5)


def test_several_children_are_stopped_side_by_side(tmp_path):
    count = 3
    children = [spawn([sys.executable, "-c", SLOW_TO_STOP, str(tmp_path), f"child{i}", str(count)],
                      tmp_path / f"child{i}.log") for i in range(count)]
    wait_until(lambda: len(list(tmp_path.glob("*.up"))) == count, "the children to start")
    terminate_all(children, grace=60)
    assert [(tmp_path / f"child{i}.saw").read_text() for i in range(count)] == [str(count)] * count
    assert not any(group_alive(child) for child in children)


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
