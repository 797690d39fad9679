"""The environment handed to tritonserver and its Python-backend stubs."""

from __future__ import annotations

import os
import sys

from tritonfleet.paths import REPO_ROOT
from tritonfleet.triton_install import TritonInstall


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
