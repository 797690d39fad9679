"""Which implementation `kernels._dispatch.use_triton` picks, for each device and override."""

import pytest
import torch

from kernels._dispatch import autotune_enabled, use_triton
from kernels.preprocess import preprocess, preprocess_reference


def test_auto_sends_cpu_tensors_to_the_reference(monkeypatch):
    monkeypatch.setenv("TRITONFLEET_KERNELS", "auto")
    assert use_triton(torch.zeros(1)) is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_sends_cuda_tensors_to_the_kernel(monkeypatch):
    monkeypatch.setenv("TRITONFLEET_KERNELS", "auto")
    assert use_triton(torch.zeros(1, device="cuda")) is True


def test_unset_variable_means_auto(monkeypatch):
    monkeypatch.delenv("TRITONFLEET_KERNELS")
    frames = torch.randint(0, 256, (1, 9, 11, 3), dtype=torch.uint8)
    # The reference and the kernel differ in the last bits, so only the reference is bit-equal.
    assert torch.equal(preprocess(frames, (5, 6)), preprocess_reference(frames, (5, 6)))


def test_torch_override_forces_the_reference(monkeypatch):
    monkeypatch.setenv("TRITONFLEET_KERNELS", "torch")
    assert use_triton(torch.zeros(1)) is False


def test_triton_override_forces_the_kernel(monkeypatch):
    monkeypatch.setenv("TRITONFLEET_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert use_triton(torch.zeros(1)) is True


def test_triton_override_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITONFLEET_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        use_triton(torch.zeros(1))


def test_unknown_mode_is_a_value_error(monkeypatch):
    monkeypatch.setenv("TRITONFLEET_KERNELS", "cuda")
    with pytest.raises(ValueError, match="TRITONFLEET_KERNELS"):
        use_triton(torch.zeros(1))


def test_autotune_switch(monkeypatch):
    monkeypatch.delenv("TRITONFLEET_AUTOTUNE", raising=False)
    assert autotune_enabled() is True
    monkeypatch.setenv("TRITONFLEET_AUTOTUNE", "0")
    assert autotune_enabled() is False


def test_what_is_not_a_tensor_goes_to_the_reference(monkeypatch):
    # Entry points dispatch before validating: bad input must reach a path that rejects it cleanly.
    monkeypatch.setenv("TRITONFLEET_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert use_triton([torch.zeros(1)]) is False
