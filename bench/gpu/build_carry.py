"""Build what travels to the GPU machine, from pinned versions, into .gpu-carry/ (git-ignored).

    .venv/bin/python -m bench.gpu.build_carry [--parts server base nvdec av] [--out .gpu-carry]

The GPU machine has Python 3.12, torch, torchvision and triton, but no Triton server, no numpy<2
for the Python-backend stubs and none of the project's other needs, and it reaches no registry.
A call to it carries at most 64 MiB, so the pieces are trimmed and xz-compressed, in parts that
travel together when they fit and one per call (on a warm machine) when they do not:

- `server/`: `server.tar.xz`, the Triton 2.51 server of the installed nvidia-pytriton 0.7.0 wheel
  (the binary, the bundled libraries it and the Python backend load, found by following their ELF
  NEEDED entries, the Python backend and the 3.12 stub only).
- `base/`: `site.tar.xz`, cp312 wheels of what the machine lacks or has in other versions,
  unpacked (numpy 1.26.4 for the stubs, tritonclient, protobuf 6, grpcio-health-checking, hpack,
  hdrhistogram, python-rapidjson). grpcio is the machine's own (1.84, tritonclient needs >= 1.81.1): carrying
  it too would put server, base, nvdec and av over one call's 64 MiB.
- `nvdec/`: PyNvVideoCodec (NVDEC), without its samples, FFmpeg sources and CUDA 12 module.
- `av/`: PyAV (FFmpeg with libx264, to encode test clips there: the H200 has no NVENC).
- `profiler/`: py-spy, to sample where the Python-backend stubs spend their time during a run
  (`run_fleet --py-spy`); optional, it travels when the others leave room.

The model repository is rendered on the device from the tree that travels with the call
(`bench/gpu/setup_device.sh`, which also unpacks the parts), so it always matches the code.
`manifest.json` records versions, files and sizes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tritonfleet.paths import REPO_ROOT
from tritonfleet.triton_install import TritonInstall

PYTRITON_VERSION = "0.7.0"
STUB_PYTHON = (3, 12)
# cp312 manylinux wheels; versions match requirements.lock where the project pins them.
PART_WHEELS = {"server": [], "base": [
    "numpy==1.26.4",
    "tritonclient==2.73.0",
    "protobuf==6.33.6",
    "grpcio-health-checking==1.81.1",
    "hpack==4.1.0",
    "hdrhistogram==0.10.8",
    "python-rapidjson==1.25",
], "nvdec": ["pynvvideocodec==2.2.4"], "av": ["av==18.1.0"], "profiler": ["py-spy==0.4.3"]}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
# What no run imports: test suites, type stubs, the wheel's FFmpeg sources, samples and notebooks,
# the module for CUDA 12 drivers (the machine's driver is CUDA 13), and wheel-duplicated .so names.
DROP_PARTS = {"tests", "testing", "samples", "benchmarks", "pynvvideocodec-2.2.4.data", "__pycache__", "include"}
# Type stubs, Cython declarations and C headers: read by compilers and type checkers, never at run time.
DROP_SUFFIXES = (".pyi", ".pxd", ".h")
DROP_FILES = ("PyNvVideoCodec_121.cpython-312-x86_64-linux-gnu.so", "libavformat.so", "libavformat.so.63.1.101",
              "libavutil.so", "libavutil.so.61.1.101")
# Executables and extension modules that wheels ship with their symbols or debug info (PyAV's are
# 31 MiB with it): stripped of what no loader needs, they leave room in a call's 64 MiB.
STRIP_FILES = ("py-spy",)
CARRY_LIMIT = 64 * 1024 * 1024


def download(specs: list[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *platforms, "-d", str(dest), *specs]
    subprocess.run(command, check=True)
    wheels = []
    for spec in specs:
        name, _, version = spec.partition("==")
        prefix = name.replace("-", "_").lower() + "-" + version + "-"
        found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(prefix)]
        if len(found) != 1:
            raise SystemExit(f"expected one wheel for {spec} in {dest}, found {[w.name for w in found]}")
        wheels.append(found[0])
    return wheels


def unpack_wheels(wheels: list[Path], site: Path) -> None:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                parts = Path(member.filename).parts
                if DROP_PARTS.intersection(parts) or parts[-1] in DROP_FILES or parts[-1].endswith(DROP_SUFFIXES):
                    continue
                archive.extract(member, site)
                mode = member.external_attr >> 16
                if mode:
                    (site / member.filename).chmod(mode & 0o777)
                if parts[-1] in STRIP_FILES or parts[-1].endswith(".so"):
                    subprocess.run(["strip", "--strip-unneeded", str(site / member.filename)], check=True)


def needed(path: Path) -> list[str]:
    """The shared libraries an ELF file names as NEEDED."""
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def server_files(install: TritonInstall) -> dict[Path, str]:
    """The server's files (source -> path inside the archive): the roots and the bundled libraries they load."""
    site = install.library_dir.parent
    roots = [install.binary, install.python_backend_dir / "libtriton_python.so", install.stub_for(STUB_PYTHON)]
    files = {path: str(path.relative_to(site)) for path in roots}
    utils = install.python_backend_dir / "triton_python_backend_utils.py"
    files[utils] = str(utils.relative_to(site))
    pending, seen = list(roots), set()
    while pending:
        for name in needed(pending.pop()):
            library = install.library_dir / name
            if library.exists() and name not in seen:
                seen.add(name)
                files[library] = str(library.relative_to(site))
                pending.append(library)
    return files


def write_tar(path: Path, members: dict[Path, str]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(path, "wb", preset=9 | lzma.PRESET_EXTREME) as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        for source, name in sorted(members.items(), key=lambda item: item[1]):
            tar.add(source, arcname=name, recursive=False)
    return path.stat().st_size


def tree(root: Path) -> dict[Path, str]:
    return {path: str(path.relative_to(root)) for path in sorted(root.rglob("*")) if path.is_file()}


def size_of(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def tracked_tree_bytes() -> int:
    """What travels besides the carry: the tracked files and untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO_ROOT / name.decode()).stat().st_size for name in listed if name and (REPO_ROOT / name.decode()).is_file())


def build_part(part: str, out: Path, wheel_cache: Path) -> None:
    folder = out / part
    if folder.exists():
        shutil.rmtree(folder)
    staging = wheel_cache.parent / f"gpu-staging-{part}"
    shutil.rmtree(staging, ignore_errors=True)
    if part == "server":
        write_tar(folder / "server.tar.xz", server_files(TritonInstall.locate()))
        return
    unpack_wheels(download(PART_WHEELS[part], wheel_cache), staging)
    write_tar(folder / "site.tar.xz", tree(staging))
    shutil.rmtree(staging)


def build(out: Path, wheel_cache: Path, parts: list[str]) -> dict:
    version = importlib.metadata.version("nvidia-pytriton")
    if version != PYTRITON_VERSION:
        raise SystemExit(f"nvidia-pytriton {version} is installed; the carry is built from {PYTRITON_VERSION}")
    for part in parts:
        build_part(part, out, wheel_cache)
    manifest = {"pytriton": version, "stub_python": "%d.%d" % STUB_PYTHON, "wheels": PART_WHEELS,
                "server_files": sorted(server_files(TritonInstall.locate()).values()),
                "parts": {part: size_of(out / part) for part in PART_WHEELS if (out / part).is_dir()},
                "working_tree": tracked_tree_bytes()}
    manifest["together"] = manifest["working_tree"] + sum(manifest["parts"].values())
    manifest["fits_one_call"] = manifest["together"] <= CARRY_LIMIT
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu-carry")
    parser.add_argument("--wheels", type=Path, default=REPO_ROOT / "build" / "gpu-wheels", help="download cache")
    parser.add_argument("--parts", nargs="+", choices=sorted(PART_WHEELS), default=list(PART_WHEELS),
                        help="parts to (re)build; the others are kept as they are")
    args = parser.parse_args(argv)
    manifest = build(args.out, args.wheels, args.parts)
    mib = 1024 * 1024
    for part, size in manifest["parts"].items():
        print(f"{part:6} {size / mib:6.1f} MiB")
    print(f"working tree {manifest['working_tree'] / mib:.1f} MiB; all together {manifest['together'] / mib:.1f} MiB "
          f"of {CARRY_LIMIT // mib}: {'one call' if manifest['fits_one_call'] else 'split the parts over calls'}")
    for part, size in manifest["parts"].items():
        if size + manifest["working_tree"] > CARRY_LIMIT:
            raise SystemExit(f"{part} alone is over the {CARRY_LIMIT // mib} MiB a call carries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
