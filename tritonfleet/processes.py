"""Child processes that cannot outlive us: own process group, SIGTERM on parent death, group kill.

Every program the project starts (Triton servers and their backend stubs, the gateway, Envoy,
HAProxy, Prometheus, the load generator), from the stack, the benchmarks and the test fixtures
alike, goes through `spawn` and `terminate`, or `ChildProcess` on top of them, so an interrupted
test, a Ctrl-C or a crash of the supervisor leaves nothing running.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tritonfleet.prerequisites import program

LOG_TAIL_LINES = 15


class ProcessExited(RuntimeError):
    """A child exited before it was ready; the message carries its exit code and the log's tail."""


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start `argv` in a new process group with stdout and stderr appended to `log_path`.

    The child is asked to receive SIGTERM when the thread that started it dies, so start long-lived
    processes from the main thread. util-linux's `setpriv` asks for that (PR_SET_PDEATHSIG, kept
    across its exec of `argv`) rather than a `preexec_fn`: with one, Python forks instead of vforking,
    and the fork runs the parent's fork handlers in the child. gRPC's restart its poller there, whose
    descriptors the child then closes before its exec, and the child aborts ("epoll_wait error: Bad
    file descriptor") whenever another thread of the parent was in gRPC at the time.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [_setpriv(), "--pdeathsig", "TERM", "--", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


@functools.cache
def _setpriv() -> str:
    return str(program("setpriv", "util-linux: apt install util-linux", ("/usr/bin/setpriv", "/bin/setpriv")))


def terminate(process: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM the whole process group, wait up to `grace` seconds, then SIGKILL what is left."""
    terminate_all([process], grace)


def terminate_all(processes: list[subprocess.Popen | None], grace: float = 15.0) -> None:
    """`terminate` for several processes at once: every group is sent SIGTERM first and they shut
    down side by side, so stopping n servers takes as long as the slowest (a Triton server takes
    seconds to unload its models), not the sum."""
    processes = [p for p in processes if p is not None]
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
    for process in processes:
        # Children that outlived their parent (backend stubs), or a parent that ignored SIGTERM.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    # Orphaned children are reaped by init a moment later; until then a group still exists.
    deadline = time.monotonic() + 5.0
    while any(group_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)


def group_alive(process: subprocess.Popen | None) -> bool:
    """Whether any process of the group `process` leads is still running."""
    if process is None:
        return False
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


class ChildProcess:
    """One program started with `spawn`, its log, a bounded wait until it is ready, and `stop`."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.name = name
        self.log_path = log_path
        self.process = spawn(argv, log_path, env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str = "ready",
                   interval: float = 0.1) -> None:
        """Poll `ready` until it holds; raise ProcessExited if the child dies first, TimeoutError after
        `timeout` seconds. Either error names the log and quotes its tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ProcessExited(f"{self.name} exited with code {self.process.returncode} before it was"
                                    f" {what} (log: {self.log_path}):\n{log_tail(self.log_path)}")
            if ready():
                return
            time.sleep(interval)
        raise TimeoutError(f"{self.name} was not {what} after {timeout:.0f} s (log: {self.log_path}):\n"
                           f"{log_tail(self.log_path)}")

    def wait_listening(self, address: str, timeout: float = 20.0) -> None:
        self.wait_until(lambda: accepts_connections(address), timeout, f"listening on {address}")

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        """Signal the whole process group without waiting (a pod being told to stop)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, grace: float = 15.0) -> None:
        terminate(self.process, grace)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def accepts_connections(address: str, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to `host:port` succeeds now."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def command_lines_containing(text: str) -> list[str]:
    """Command lines of this machine's processes that contain `text`, read from /proc (what
    `pgrep -af` prints, without needing procps)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:  # ended while we looked, or not ours to read
            continue
        line = " ".join(arg.decode(errors="replace") for arg in argv if arg)
        if text in line:
            found.append(f"{entry.name} {line}")
    return found
