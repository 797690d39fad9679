"""Kernel tests run the Triton kernels on whatever is here: compiled on CUDA, interpreted on CPU.

TRITON_INTERPRET must be set before any `kernels` module defines its @triton.jit functions, so
it is set here, at collection, ahead of the test modules' imports. On a CUDA machine it is left
alone, and the tests run on CUDA tensors through the compiled kernels; `TRITON_INTERPRET=1 pytest`
there runs the CPU (interpreter) variant instead.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

# Triton's own helpers (tl.max's argmax combine, say) are @triton.jit functions defined when
# triton is imported: if something imported triton first, a later TRITON_INTERPRET cannot reach
# them, and the kernel tests say so instead of failing obscurely.
IMPORTED_TOO_EARLY = False
if not torch.cuda.is_available():
    IMPORTED_TOO_EARLY = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
    os.environ["TRITON_INTERPRET"] = "1"

DEVICES = ["cpu"] if os.environ.get("TRITON_INTERPRET") == "1" else ["cuda"]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def force_triton(monkeypatch):
    """Every kernel test goes through the Triton kernel, also on CPU (through the interpreter)."""
    if IMPORTED_TOO_EARLY:
        pytest.fail("triton was imported before tests/kernels set TRITON_INTERPRET=1; run with it set")
    monkeypatch.setenv("TRITONFLEET_KERNELS", "triton")
