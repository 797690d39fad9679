"""The image recipes, read: bases pinned to the local Debian base, every COPY and bind-mount source let
through by the recipe's own .dockerignore, the lock installed from the wheelhouse alone and before the
project's code, and the Triton image's repository-rendering step run for real. Building them is
tests/deploy/test_chart_runs.py's part."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO_ROOT / "deploy/docker").glob("*.Dockerfile"))
TRITON = REPO_ROOT / "deploy/docker/triton.Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [tuple(line.strip().split(None, 1)) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#") and len(line.split(None, 1)) == 2]


def allowed(path: str, ignore_file: Path) -> bool:
    """Docker's rule: the last matching pattern wins; `!` lets a path back in."""
    verdict = True
    for pattern in ignore_file.read_text().split("\n"):
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), pattern) or path.startswith(pattern + "/"):
            verdict = negate
    return verdict


def build_args(dockerfile: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in instructions(dockerfile) if keyword == "ARG" and "=" in rest)


def test_there_is_a_triton_and_an_app_image_and_no_ngc_recipe():
    assert {p.name for p in DOCKERFILES} == {"triton.Dockerfile", "app.Dockerfile"}
    assert not any("nvcr.io" in p.read_text() for p in DOCKERFILES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_start_from_the_local_debian_base(dockerfile):
    froms = [rest.split()[0] for keyword, rest in instructions(dockerfile) if keyword == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    assert build_args(dockerfile)["BASE_IMAGE"].startswith("localhost/tritonfleet-base:")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_sources_exist_and_pass_the_dockerignore(dockerfile):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.exists()
    for keyword, rest in instructions(dockerfile):
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _ = [part for part in rest.split() if not part.startswith("--")]
            for source in sources:
                # The wheelhouse is made by build-images.sh, so it need not exist in a fresh clone.
                if not source.startswith("build/wheelhouse/"):
                    assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                assert allowed(source, ignore), f"{dockerfile.name}: {source} is excluded by {ignore.name}"
        for mount in re.findall(r"--mount=type=bind,source=([^,\s]+)", rest):
            assert allowed(mount + "/", ignore), f"{dockerfile.name}: mount {mount} is excluded by {ignore.name}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_lock_installs_from_the_wheelhouse_alone_before_the_project(dockerfile):
    steps = instructions(dockerfile)
    installs = [(i, rest) for i, (k, rest) in enumerate(steps) if k == "RUN" and "pip install" in rest]
    assert installs and all("--no-index" in rest for _, rest in installs)
    lock_step = next(i for i, rest in installs if "-r /tmp/" in rest)
    project_copy = next(i for i, (k, rest) in enumerate(steps) if k == "COPY" and "tritonfleet-*.whl" in rest)
    project_step = next(i for i, rest in installs if "tritonfleet-*.whl" in rest)
    assert lock_step < project_copy < project_step
    lock_filter = next(rest for _, rest in installs if "grep -v" in rest)
    assert "/tmp/requirements.lock" in lock_filter


def test_the_triton_image_takes_triton_from_the_locked_pytriton_wheel():
    lock = (REPO_ROOT / "requirements.lock").read_text().splitlines()
    assert "nvidia-pytriton==0.7.0" in lock  # Triton 2.51, the server every test runs
    excluded = re.search(r"grep -v -E '\^\((.*?)\)=='", TRITON.read_text())[1].split("|")
    assert "nvidia-pytriton" not in excluded and "numpy" not in excluded
    assert "numpy==1.26.4" in lock  # the 2.51 Python-backend stub needs numpy<2
    assert build_args(TRITON)["TORCH"] == "torch==2.13.0+cpu"


@pytest.mark.parametrize("profile, kind", [("cpu", "KIND_CPU"), ("gpu", "KIND_GPU")])
def test_the_triton_image_repository_step_renders_its_profile(tmp_path, profile, kind):
    run_step = next(rest for k, rest in instructions(TRITON) if k == "RUN" and "render_repository" in rest)
    program = re.search(r'python -c "(.*?)" "\$\{PROFILE\}"', run_step)[1]
    program = program.replace("/tmp/src", str(REPO_ROOT)).replace("'/models'", repr(str(tmp_path / "models")))
    subprocess.run([sys.executable, "-c", program, profile], cwd=tmp_path, check=True, timeout=60)
    configs = list((tmp_path / "models").glob("*/config.pbtxt"))
    assert configs and any(kind in c.read_text() for c in configs)


def test_the_build_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO_ROOT / "deploy/docker/build-images.sh")], check=True, timeout=30)
