"""The environment handed to tritonserver and its Python-backend stubs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tritonfleet.paths import REPO_ROOT
from tritonfleet.triton_install import TritonInstall, TritonNotInstalled, install_hint


def test_explicit_pythonpath_comes_before_the_interpreters_site_packages(tmp_path):
    # Python reads PYTHONPATH before site-packages; helpers started with this environment must too.
    chosen = tmp_path / "numpy-1"
    chosen.mkdir()
    env = TritonInstall.locate().environment({"PYTHONPATH": str(chosen), "PATH": "/usr/bin"})
    paths = env["PYTHONPATH"].split(os.pathsep)
    site = [i for i, p in enumerate(paths) if "site-packages" in p or "dist-packages" in p]
    assert site, paths
    assert paths.index(str(chosen)) < min(site)
    assert paths[0] == str(REPO_ROOT)


def test_the_stub_finds_this_interpreter_first_on_path():
    env = TritonInstall.locate().environment({"PATH": "/usr/bin"})
    paths = env["PYTHONPATH"].split(os.pathsep)
    ours = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    assert ours and all(p in paths for p in ours)
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_a_stub_whose_libpython_is_missing_is_named_before_triton_starts():
    # The wheel carries stubs for several Pythons; those whose libpython this machine lacks are the
    # real case of a machine without libpython3.11 for the 3.11 stub.
    install = TritonInstall.locate()
    installed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    lacking = [(3, minor) for minor in range(8, 14)
               if (install.stubs_dir / f"3.{minor}").is_dir() and f"libpython3.{minor}.so.1.0 " not in installed]
    if not lacking:
        pytest.skip("this machine has the libpython of every stub in the wheel")
    major, minor = lacking[0]
    with pytest.raises(TritonNotInstalled) as raised:
        install.check_stub_libraries((major, minor))
    assert f"needs libpython{major}.{minor}.so.1.0" in str(raised.value)
    assert f"apt-get install libpython{major}.{minor}" in str(raised.value)


def test_the_running_pythons_stub_is_checked_against_this_machine():
    # Agrees with the loader's own view: ldconfig lists this Python's libpython exactly when the check passes.
    version = "%d.%d" % sys.version_info[:2]
    installed = f"libpython{version}.so.1.0 " in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    try:
        TritonInstall.locate().check_stub_libraries()
    except TritonNotInstalled as exc:
        assert not installed, exc
    else:
        assert installed


def test_the_libpython_hint_names_the_debian_package():
    assert install_hint(["libpython3.12.so.1.0"]) == "make system installs it: apt-get install libpython3.12"
    assert "apt-get" not in install_hint(["libpython3.12.so.1.0", "libstdc++.so.6"])
