"""Shared fixtures: real Triton servers on the project's model repository, and an orphan check."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton-language kernels run through Triton's interpreter. It must be chosen
# before anything imports `triton`, since triton's own helpers are defined differently under it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tritonfleet.paths import MODEL_REPOSITORY
from tritonfleet.prerequisites import MissingPrerequisite
from tritonfleet.processes import group_alive
from tritonfleet.proxies import haproxy_binary
from tritonfleet.triton_install import TritonInstall
from tritonfleet.triton_server import TritonServer, start_fleet, stop_all


pytest_plugins = ("pytester",)


def check_triton_stub() -> None:
    TritonInstall.locate().check_stub_libraries()


def missing_prerequisites() -> list[str]:
    """What this machine lacks that some tests need, each with what installs it."""
    missing = []
    for check in (check_triton_stub, haproxy_binary):
        try:
            check()
        except MissingPrerequisite as exc:
            missing.append(str(exc))
    return missing


def pytest_report_header(config) -> list[str]:
    # Said once at the top of the run, so a CI log shows why tests were skipped before it lists them.
    return [f"missing prerequisite (tests that need it skip): {reason}" for reason in missing_prerequisites()]


@contextlib.contextmanager
def skip_missing_prerequisite():
    """A program or library this machine lacks (haproxy, the libpython that Triton's Python backend
    links against) skips the test that needs it, with the reason, not an error."""
    try:
        yield
    except MissingPrerequisite as exc:
        pytest.skip(f"missing prerequisite: {exc}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with skip_missing_prerequisite():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with skip_missing_prerequisite():
        return (yield)


@pytest.fixture
def triton_runs_here() -> None:
    """For tests that start Triton in a child process (the CLI): skip, with the reason, where the
    Python-backend stub cannot load, before the child fails with it."""
    check_triton_stub()


def live_process_groups(servers: list[TritonServer]) -> list[int]:
    """Process groups of these servers that still hold a process (the server or a backend stub).

    Each server runs in a process group of its own, so this sees exactly what the test started,
    also when other suites run servers on the same machine.
    """
    return [server.process.pid for server in servers if group_alive(server.process)]


@pytest.fixture
def triton_fleet(tmp_path_factory):
    """Factory: `triton_fleet(n, repo=..., extra_args=[...])` starts n real servers; all stop after the test."""
    started: list[list[TritonServer]] = []

    def start(count: int = 1, repo: Path = MODEL_REPOSITORY, extra_args: list[str] | None = None):
        workdir = tmp_path_factory.mktemp("triton")
        servers = start_fleet(count, repo, workdir, extra_args=extra_args)
        started.append(servers)
        return servers

    yield start
    for servers in started:
        stop_all(servers)
    # Every test that started servers must leave none behind, also when it failed.
    leftover = [pgid for servers in started for pgid in live_process_groups(servers)]
    assert not leftover, f"tritonserver process groups left running: {leftover}"


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory):
    """Two servers on the project's model repository, shared by the tests of one module."""
    servers = start_fleet(2, MODEL_REPOSITORY, tmp_path_factory.mktemp("triton-shared"))
    yield servers
    stop_all(servers)
