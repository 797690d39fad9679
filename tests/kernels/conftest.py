"""Kernel tests run the Triton kernels on whatever is here: compiled on CUDA, interpreted on CPU.

TRITON_INTERPRET must be set before any `kernels` module defines its @triton.jit functions, so
it is set here, at collection, ahead of the test modules' imports. On a CUDA machine it is left
alone, and the tests run on CUDA tensors through the compiled kernels; `TRITON_INTERPRET=1 pytest`
there runs the CPU (interpreter) variant instead.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu"] if os.environ.get("TRITON_INTERPRET") == "1" else ["cuda"]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def force_triton(monkeypatch):
    """Every kernel test goes through the Triton kernel, also on CPU (through the interpreter)."""
    monkeypatch.setenv("TRITONFLEET_KERNELS", "triton")
