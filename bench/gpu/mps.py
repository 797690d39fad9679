"""CUDA MPS for a run: the model instances' processes share the GPU at once instead of in turns.

Every Python-backend instance is a process with a CUDA context of its own, and without MPS the GPU
runs one context at a time, switching between them; a camera instance's NVDEC copies and analysis
kernels then wait for the other instances' time slices. With the MPS control daemon running (the
default pipe directory, /tmp/nvidia-mps, which every CUDA process looks in), their work goes
through one shared context. On Kubernetes this is the NVIDIA device plugin's MPS sharing.
"""

from __future__ import annotations

import shutil
import subprocess
import time


def start() -> str:
    """Start the MPS control daemon; what happened, for the record ("" when it started)."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        return "nvidia-cuda-mps-control is not on this machine"
    done = subprocess.run([control, "-d"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"nvidia-cuda-mps-control -d failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
    time.sleep(1.0)  # the daemon forks; its pipe appears a moment later
    return ""


def servers() -> str:
    """The MPS servers running (one per GPU once a client connected), as nvidia-smi lists them. Matched
    by the process's own name: a run's working folder (its label) may hold "mps" too."""
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,process_name", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return "; ".join(line for line in done.stdout.splitlines()
                     if line.partition(",")[2].strip().rsplit("/", 1)[-1] == "nvidia-cuda-mps-server")


def stop() -> str:
    """Tell the control daemon to quit; what happened, for the record ("" when it quit). It quits
    only after every process with a CUDA context on it has exited, and until then refuses new ones."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        return ""
    try:
        subprocess.run([control], input="quit\n", capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "the MPS control daemon did not quit within 30 s: a CUDA process is still connected to it"
    return ""
