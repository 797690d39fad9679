"""The GPUs this machine offers, as `CUDA_VISIBLE_DEVICES` names them (none on a CPU machine)."""

from __future__ import annotations

import os
import re
import subprocess

_GPU_LINE = re.compile(r"^GPU (\d+): ", re.MULTILINE)


def parse_gpu_list(text: str) -> list[str]:
    """The indices in `nvidia-smi -L` output ("GPU 0: NVIDIA H200 (UUID: GPU-...)"), in order."""
    return _GPU_LINE.findall(text)


def visible_devices(value: str) -> list[str]:
    """The devices a CUDA_VISIBLE_DEVICES value names: CUDA stops at the first "-1" (or empty entry)."""
    devices = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry == "-1":
            break
        devices.append(entry)
    return devices


def list_gpus() -> list[str]:
    """One entry per GPU a child process may be given: this process's own CUDA_VISIBLE_DEVICES where it
    is set (a child then sees only those), else every GPU `nvidia-smi -L` lists; [] without a driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return visible_devices(visible)
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_list(listing.stdout) if listing.returncode == 0 else []
