"""Kernel tests run the Triton kernels on whatever is here: compiled on CUDA, interpreted on CPU.

TRITON_INTERPRET must be set before any `kernels` module defines its @triton.jit functions, so
it is set here, at collection, ahead of the test modules' imports. On a CUDA machine it is left
alone so the tests exercise the compiled kernels.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def force_triton(monkeypatch):
    """Every kernel test goes through the Triton kernel, also on CPU (through the interpreter)."""
    monkeypatch.setenv("TRITONFLEET_KERNELS", "triton")
