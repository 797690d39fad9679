"""What this machine must have besides the Python packages: programs and shared libraries.

A missing one raises `MissingPrerequisite`, whose message names the thing and what installs it, so
the CLI can print it and the test suite can skip what needs it with that reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


class MissingPrerequisite(RuntimeError):
    """A program or library this machine lacks; the message says what installs it."""


class ProgramNotInstalled(MissingPrerequisite, FileNotFoundError):
    """A program is on neither PATH nor its usual place."""


def program(name: str, install_hint: str, usual_places: tuple[str, ...] = ()) -> Path:
    """The path of program `name`, from PATH or one of `usual_places` (sbin is not on every PATH)."""
    found = shutil.which(name) or next((place for place in usual_places if Path(place).exists()), None)
    if found is None:
        raise ProgramNotInstalled(f"{name} is not installed ({install_hint})")
    return Path(found)


# `ldd` prints one line per library; those it cannot resolve read `libfoo.so.1 => not found`.
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$", re.MULTILINE)


def unresolved_libraries(ldd_output: str) -> list[str]:
    """The shared libraries `ldd` reports as not found, in its order."""
    return _NOT_FOUND.findall(ldd_output)


def missing_libraries(binary: Path, env: dict[str, str] | None = None) -> list[str]:
    """The shared libraries `binary` needs that the dynamic loader cannot find under `env`.

    Empty where `ldd` itself is missing: then nothing can be said before the binary runs.
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    result = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env=env, check=False)
    return unresolved_libraries(result.stdout)
