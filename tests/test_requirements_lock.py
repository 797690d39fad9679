"""requirements.lock says what `make install` installs: every direct pin of pyproject.toml at the
same version, torch as its CPU build, and each pin the version this environment holds."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def lock_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def project_pins() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return {canonicalize_name(r.name): Version(next(iter(r.specifier)).version) for r in requirements}


def test_the_lock_pins_every_direct_dependency_at_its_project_version():
    lock = lock_pins()
    wrong = {name: (str(version), str(lock.get(name))) for name, version in project_pins().items()
             if name not in lock or lock[name].public != version.public}
    assert not wrong, f"pyproject pin vs lock: {wrong} (run `make lock`)"


def test_torch_is_locked_as_the_cpu_build():
    # A plain 2.13.0 from PyPI is the multi-GB CUDA build.
    assert lock_pins()["torch"].local == "cpu"


def test_this_environment_holds_what_the_lock_pins():
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in importlib.metadata.distributions()}
    differ = {name: (str(version), str(installed.get(name))) for name, version in lock_pins().items()
              if installed.get(name) != version}
    assert not differ, f"lock vs installed: {differ} (run `make install`)"
