"""Where the real Triton Inference Server lives inside the installed `nvidia-pytriton` wheel.

The wheel carries the `tritonserver` 2.51 binary, the shared libraries it links against (in
`nvidia_pytriton.libs/`), the Python backend (`libtriton_python.so` plus its utils module) and one
backend stub per Python version. Triton loads a backend from `<backend-directory>/python/`, and the
stub it starts must match the interpreter whose packages the models import, so we assemble a backend
directory of our own: the wheel's backend files plus the stub for the running Python.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tritonfleet.paths import REPO_ROOT
from tritonfleet.prerequisites import MissingPrerequisite, missing_libraries


class TritonNotInstalled(MissingPrerequisite):
    """The nvidia-pytriton wheel, a part of it we need, or a system library it links against is missing."""


@dataclass(frozen=True)
class TritonInstall:
    """Paths of one installed Triton server distribution."""

    binary: Path
    library_dir: Path
    python_backend_dir: Path
    stubs_dir: Path

    @classmethod
    def locate(cls) -> "TritonInstall":
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotInstalled(
                "the Triton server comes from the nvidia-pytriton wheel; run `make install` "
                "(pip install nvidia-pytriton==0.7.0)"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        server_dir = package_dir / "tritonserver"
        install = cls(
            binary=server_dir / "bin" / "tritonserver",
            library_dir=package_dir.parent / "nvidia_pytriton.libs",
            python_backend_dir=server_dir / "backends" / "python",
            stubs_dir=server_dir / "python_backend_stubs",
        )
        for path in (install.binary, install.library_dir, install.python_backend_dir):
            if not path.exists():
                raise TritonNotInstalled(f"the nvidia-pytriton wheel has no {path}")
        return install

    def stub_for(self, version: tuple[int, int] | None = None) -> Path:
        major, minor = version or sys.version_info[:2]
        stub = self.stubs_dir / f"{major}.{minor}" / "triton_python_backend_stub"
        if not stub.exists():
            have = sorted(p.name for p in self.stubs_dir.iterdir())
            raise TritonNotInstalled(
                f"no Python-backend stub for Python {major}.{minor} (the wheel has {', '.join(have)})"
            )
        return stub

    def check_stub_libraries(self, version: tuple[int, int] | None = None) -> None:
        """Raise TritonNotInstalled, naming what installs them, if the stub's shared libraries are missing.

        The stub links against the system libpython of its version; without it every Python model
        fails to load with a bare "failed to launch stub" in Triton's log, so it is checked up front.
        """
        stub = self.stub_for(version)
        missing = missing_libraries(stub, env=self.environment())
        if missing:
            raise TritonNotInstalled(
                f"the Triton Python-backend stub {stub} needs {', '.join(missing)}, which this machine does"
                f" not have ({install_hint(missing)})"
            )

    def prepare_backend_dir(self, target: Path) -> Path:
        """Lay out `<target>/python/` with the backend and the stub for this Python.

        Returns the directory to pass as `--backend-directory`. Idempotent: files already in place
        are left alone, so several servers can share one directory.
        """
        self.check_stub_libraries()
        python_dir = target / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        files = {
            "libtriton_python.so": self.python_backend_dir / "libtriton_python.so",
            "triton_python_backend_utils.py": self.python_backend_dir / "triton_python_backend_utils.py",
            "triton_python_backend_stub": self.stub_for(),
        }
        for name, source in files.items():
            dest = python_dir / name
            if not dest.exists() or dest.stat().st_size != source.stat().st_size:
                shutil.copy2(source, dest)
        return target

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment the server and its stubs need.

        The stub embeds the system libpython and takes its `sys.path` from the `python3` first on
        PATH, so the running interpreter's folder goes first there: the stubs then see this
        environment's packages (torch, numpy<2, the project's `kernels` and `models`). The 2.51
        stub ignores PYTHONPATH (seen on the GPU machine), but Python helpers it starts read it, so
        it is set too, in the interpreter's own order: the repository, the caller's PYTHONPATH,
        then the interpreter's site-packages.
        """
        env = dict(os.environ if base is None else base)
        libs = [str(self.library_dir)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        paths = [str(REPO_ROOT)]
        if env.get("PYTHONPATH"):
            paths.extend(env["PYTHONPATH"].split(os.pathsep))
        paths += [p for p in sys.path if p and Path(p).is_dir() and ("site-packages" in p or "dist-packages" in p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


_LIBPYTHON = re.compile(r"^(libpython\d+\.\d+)\.so")


def install_hint(libraries: list[str]) -> str:
    """What installs these libraries: Debian names libpythonX.Y.so.1.0's package libpythonX.Y."""
    packages = [match.group(1) for match in map(_LIBPYTHON.match, libraries) if match]
    if packages and len(packages) == len(libraries):
        return f"make system installs it: apt-get install {' '.join(packages)}"
    return "install them with the system's package manager"
