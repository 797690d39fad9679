"""How the kernel modules fit together: no import circles, and each call checks its inputs once."""

import ast
from pathlib import Path

import pytest
import torch

import kernels.postprocess
import kernels.preprocess
import kernels.temporal
import kernels.yuv

KERNELS = Path(kernels.preprocess.__file__).parent


def kernel_imports() -> dict[str, set[str]]:
    """Every `kernels.*` module each kernels module imports, at module level or inside functions."""
    graph = {}
    for path in KERNELS.glob("*.py"):
        name = f"kernels.{path.stem}" if path.stem != "__init__" else "kernels"
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kernels"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("kernels"))
        graph[name] = found - {name}
    return graph


def test_kernel_modules_import_no_circle():
    graph = kernel_imports()
    assert "kernels.preprocess" in graph and "kernels.yuv" in graph

    def visit(module, path):
        for dep in graph.get(module, ()):
            assert dep not in path, f"import circle: {' -> '.join([*path, dep])}"
            visit(dep, [*path, dep])

    for module in graph:
        visit(module, [module])


def count_calls(monkeypatch, module, name) -> list:
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("mode", ["triton", "torch"])
def test_preprocess_checks_its_inputs_once(monkeypatch, mode, device):
    monkeypatch.setenv("TRITONFLEET_KERNELS", mode)
    calls = count_calls(monkeypatch, kernels.preprocess, "check_inputs")
    kernels.preprocess.preprocess(torch.zeros(1, 6, 6, 3, dtype=torch.uint8, device=device), (4, 4))
    assert len(calls) == 1


@pytest.mark.parametrize("mode", ["triton", "torch"])
def test_temporal_and_postprocess_check_their_inputs_once(monkeypatch, mode, device):
    monkeypatch.setenv("TRITONFLEET_KERNELS", mode)
    temporal = count_calls(monkeypatch, kernels.temporal, "_check")
    frames = torch.zeros(1, 8, 8, 3, dtype=torch.uint8, device=device)
    kernels.temporal.temporal_update(frames, frames, torch.zeros(1, 8, 8, 3, device=device), alpha=0.5, grid=(2, 2))
    softmax = count_calls(monkeypatch, kernels.postprocess, "_check")
    kernels.postprocess.softmax_topk(torch.zeros(2, 20, device=device), 3)
    assert (len(temporal), len(softmax)) == (1, 1)


@pytest.mark.parametrize("mode", ["triton", "torch"])
def test_yuv_checks_its_inputs_once(monkeypatch, mode, device):
    monkeypatch.setenv("TRITONFLEET_KERNELS", mode)
    calls = count_calls(monkeypatch, kernels.yuv, "check_inputs")
    y, uv, u, v = (torch.zeros(*shape, dtype=torch.uint8, device=device) for shape in ((8, 8), (4, 4, 2), (4, 4), (4, 4)))
    kernels.yuv.nv12_to_tensor(y, uv, (4, 4))
    kernels.yuv.i420_to_tensor(y, u, v, (4, 4))
    assert len(calls) == 2


def test_bad_input_gets_the_same_error_on_both_paths(monkeypatch):
    for mode in ("triton", "torch"):
        monkeypatch.setenv("TRITONFLEET_KERNELS", mode)
        with pytest.raises(ValueError, match="frames must be a tensor or a list of tensors"):
            kernels.preprocess.preprocess("not frames", (4, 4))
        with pytest.raises(ValueError, match="logits must be a torch.Tensor"):
            kernels.postprocess.softmax_topk([1.0, 2.0], 1)
