"""Which implementation runs: the Triton-language kernel or the plain torch reference.

CUDA tensors go to the Triton kernels and CPU tensors to the torch references. The environment
variable TRITONFLEET_KERNELS overrides that choice:

* ``auto`` (the default): CUDA -> Triton kernel, CPU -> torch reference;
* ``triton``: always the Triton kernel; on CPU this needs ``TRITON_INTERPRET=1`` set before
  ``triton`` is first imported (the interpreter runs each kernel through NumPy: right for tests,
  far too slow to serve);
* ``torch``: always the torch reference.

TRITONFLEET_AUTOTUNE=0 skips autotuning on the GPU: each kernel runs its first (default) config.
Autotuning times every config once per new shape, which is right for serving and benchmarks but
makes a test run of many small shapes spend most of its time timing configs.
"""

from __future__ import annotations

import os

import torch

_MODES = ("auto", "triton", "torch")


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter instead of compiling them."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(tensor) -> bool:
    """Whether a call whose inputs live where `tensor` does should go through the Triton kernel.

    The entry points dispatch before they validate, so that each implementation checks its inputs
    once: anything that is not a tensor is bad input, and goes to the reference, which rejects it
    with the same message the kernel's launch wrapper would.
    """
    mode = os.environ.get("TRITONFLEET_KERNELS", "auto")
    if mode not in _MODES:
        raise ValueError(f"TRITONFLEET_KERNELS must be one of {_MODES}, got {mode!r}")
    if mode == "torch" or not isinstance(tensor, torch.Tensor):
        return False
    if mode == "triton":
        if not tensor.is_cuda and not interpreting():
            raise RuntimeError(
                "TRITONFLEET_KERNELS=triton on CPU tensors needs TRITON_INTERPRET=1 "
                "set before triton is imported"
            )
        return True
    return tensor.is_cuda


def autotune_enabled() -> bool:
    """False when TRITONFLEET_AUTOTUNE=0: launch the first config instead of timing them all."""
    return os.environ.get("TRITONFLEET_AUTOTUNE", "1") != "0"


def launch(autotuned, configs, grid, args, kwargs, interpreter_meta: dict) -> None:
    """Launch a @triton.autotune'd kernel: autotuned, with its first config, or interpreted.

    `grid` takes the meta-parameters (the config's kwargs) like Triton's own grid callables.
    """
    raw = autotuned.fn
    if interpreting():
        raw[grid(interpreter_meta)](*args, **kwargs, **interpreter_meta)
    elif autotune_enabled():
        autotuned[grid](*args, **kwargs)
    else:
        cfg = configs[0]
        raw[grid(cfg.kwargs)](
            *args, **kwargs, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages
        )
