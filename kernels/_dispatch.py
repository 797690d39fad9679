"""Which implementation runs: the Triton-language kernel or the plain torch reference.

CUDA tensors go to the Triton kernels and CPU tensors to the torch references. The environment
variable TRITONFLEET_KERNELS overrides that choice:

* ``auto`` (the default): CUDA -> Triton kernel, CPU -> torch reference;
* ``triton``: always the Triton kernel; on CPU this needs ``TRITON_INTERPRET=1`` set before
  ``triton`` is first imported (the interpreter runs each kernel through NumPy: right for tests,
  far too slow to serve);
* ``torch``: always the torch reference.
"""

from __future__ import annotations

import os

import torch

_MODES = ("auto", "triton", "torch")


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter instead of compiling them."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(tensor: torch.Tensor) -> bool:
    """Whether `tensor` should go through the Triton kernel."""
    mode = os.environ.get("TRITONFLEET_KERNELS", "auto")
    if mode not in _MODES:
        raise ValueError(f"TRITONFLEET_KERNELS must be one of {_MODES}, got {mode!r}")
    if mode == "torch":
        return False
    if mode == "triton":
        if not tensor.is_cuda and not interpreting():
            raise RuntimeError(
                "TRITONFLEET_KERNELS=triton on CPU tensors needs TRITON_INTERPRET=1 "
                "set before triton is imported"
            )
        return True
    return tensor.is_cuda
