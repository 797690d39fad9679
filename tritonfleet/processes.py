"""Child processes that cannot outlive us: own process group, SIGTERM on parent death, group kill.

Every program the stack starts (Triton servers and their backend stubs, the gateway, Envoy,
Prometheus) goes through `spawn` and `terminate`, so an interrupted test, a Ctrl-C or a crash of
the supervisor leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `argv` in a new process group with stdout and stderr appended to `log_path`.

    The child is asked to receive SIGTERM when the thread that started it dies, so start long-lived
    processes from the main thread.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def terminate(process: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM the whole process group, wait up to `grace` seconds, then SIGKILL what is left."""
    if process is None:
        return
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # Children that outlived their parent (backend stubs), or a parent that ignored SIGTERM.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    # Orphaned children are reaped by init a moment later; until then the group still exists.
    deadline = time.monotonic() + 5.0
    while group_alive(process) and time.monotonic() < deadline:
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


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
