"""The Dockerfiles (no Docker engine here to build them): pinned bases, every COPY source present and
let through by the Dockerfile's own .dockerignore, dependencies before source, and the Triton image's
repository-rendering step run for real."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO_ROOT / "deploy/docker").glob("*.Dockerfile"))


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


def test_there_is_a_triton_and_an_app_image():
    assert {p.name for p in DOCKERFILES} == {"triton.Dockerfile", "app.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_and_sources_exist_and_pass_the_dockerignore(dockerfile):
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.exists()
    args = {}
    steps = instructions(dockerfile)
    for keyword, rest in steps:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
        if keyword == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            assert ":" in image and not image.endswith(":latest"), image
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _ = [part for part in rest.split() if not part.startswith("--")]
            for source in sources:
                assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                assert allowed(source, ignore), f"{dockerfile.name}: {source} is excluded by {ignore.name}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_install_before_source_is_copied(dockerfile):
    steps = instructions(dockerfile)
    first_install = next(i for i, (k, rest) in enumerate(steps) if k == "RUN" and "pip install" in rest)
    source_copies = [i for i, (k, rest) in enumerate(steps)
                     if k == "COPY" and any(p in rest for p in ("gateway/", "kernels/", "tritonfleet/"))]
    assert source_copies and first_install < min(source_copies)


def test_the_triton_image_repository_step_renders_the_gpu_profile(tmp_path):
    run_step = next(rest for k, rest in instructions(REPO_ROOT / "deploy/docker/triton.Dockerfile")
                    if k == "RUN" and "render_repository" in rest)
    program = re.search(r'python -c "(.*)"', run_step)[1].replace("/models", str(tmp_path / "models"))
    subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, check=True, timeout=60)
    configs = list((tmp_path / "models").glob("*/config.pbtxt"))
    assert configs and any("KIND_GPU" in c.read_text() for c in configs)
