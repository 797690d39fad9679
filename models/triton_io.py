"""What every model.py shares: config checks, tensors in and out of Triton, per-request errors.

Imported only inside the Python-backend stub, where `triton_python_backend_utils` exists.
Outputs go out through DLPack (CPU or GPU, no copy); BYTES outputs, which DLPack cannot carry,
through numpy object arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils


def complete_config(auto_complete_model_config, inputs: list[dict], outputs: list[dict]):
    """Add the tensors the config leaves out; a tensor it names with another dtype or dims fails the load.

    `add_input`/`add_output` raise ValueError naming the model, the tensor, and both the expected and
    the configured dtype or dims: Triton reports that as the model's load failure.
    """
    for spec in inputs:
        auto_complete_model_config.add_input(spec)
    for spec in outputs:
        auto_complete_model_config.add_output(spec)
    return auto_complete_model_config


def parameters(model_config: dict) -> dict[str, str]:
    """The config's `parameters { key: ... value { string_value: ... } }` as a plain dict."""
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


def load_config(args: dict) -> dict:
    return json.loads(args["model_config"])


def model_file(args: dict, relative: str) -> Path:
    """A file named in the config, relative to the model's directory (`<repository>/<model>/`)."""
    return (Path(args["model_repository"]) / relative).resolve()


def instance_device(args: dict) -> torch.device:
    """The device Triton placed this instance on: KIND_GPU gives `model_instance_device_id`."""
    if args["model_instance_kind"] == "GPU":
        return torch.device("cuda", int(args["model_instance_device_id"]))
    return torch.device("cpu")


def input_tensor(request, name: str, device: torch.device) -> torch.Tensor | None:
    """An input as a torch tensor on `device` (no copy when already there), None when absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    # DLPack on CPU too: no numpy between Triton's buffer and torch (the 2.51 stub's numpy views
    # of inputs came back wrong on the H100 machine).
    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack()).to(device)


def input_bytes(request, name: str) -> list[bytes] | None:
    """A BYTES input as a flat list of Python bytes, None when absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return [bytes(item) for item in tensor.as_numpy().reshape(-1)]


def output(name: str, value: torch.Tensor) -> "pb_utils.Tensor":
    return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.contiguous()))


def bytes_output(name: str, rows: list[list[str]]) -> "pb_utils.Tensor":
    return pb_utils.Tensor(name, np.array([[s.encode() for s in row] for row in rows], dtype=np.object_))


def error_response(exc: Exception) -> "pb_utils.InferenceResponse":
    """A bad request's own error; ValueError means the client sent something wrong."""
    code = pb_utils.TritonError.INVALID_ARG if isinstance(exc, ValueError) else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))


def responses_for(requests, run_batch, device: torch.device | None = None) -> list:
    """`run_batch(requests)` -> one item per request (outputs list or an exception), as responses.

    GPU outputs leave through DLPack while torch may still be computing them on its stream, so a
    GPU model waits for its stream before Triton reads them.
    """
    results = run_batch(requests)
    if device is not None and device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    responses = []
    for item in results:
        if isinstance(item, Exception):
            responses.append(error_response(item))
        else:
            responses.append(pb_utils.InferenceResponse(output_tensors=item))
    return responses
