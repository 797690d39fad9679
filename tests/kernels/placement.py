"""Test inputs on the device the kernels run on: CUDA on a GPU machine, CPU where they are interpreted.

A CPU tensor on a CUDA machine, with the kernels forced (TRITONFLEET_KERNELS=triton), stops at the
dispatcher with a RuntimeError, before the input check a test is about.
"""

from __future__ import annotations

import torch


def on_device(device: str, *values):
    """Each value with its tensors (also those in a list) moved to `device`; anything else as it is.
    One value in, that value out; several, a tuple."""

    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, list):
            return [move(v) for v in value]
        return value

    moved = tuple(move(v) for v in values)
    return moved[0] if len(moved) == 1 else moved
