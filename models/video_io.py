"""Triton requests of the video models -> `FrameIn`s, and the settings both video models share.

Imported only inside the Python-backend stub.
"""

from __future__ import annotations

import torch
import triton_python_backend_utils as pb_utils

from models import triton_io
from models.pipeline import build_from_parameters
from models.video import FrameIn, VideoAnalyzer, settings_from_parameters

FRAME_INPUT = {"name": "FRAME", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}


def build_analyzer(args: dict) -> tuple[VideoAnalyzer, list[str], torch.device]:
    config = triton_io.load_config(args)
    params = triton_io.parameters(config)
    device = triton_io.instance_device(args)
    pipeline, labels = build_from_parameters(params, lambda p: triton_io.model_file(args, p), device)
    return VideoAnalyzer(pipeline, settings_from_parameters(params)), labels, device


def frame_in(request, device: torch.device) -> FrameIn:
    """One frame of one stream; START and END are the sequence batcher's control inputs."""
    frame = triton_io.input_tensor(request, "FRAME", device)
    if frame.shape[0] != 1:
        raise ValueError(f"send one frame per request (FRAME batch of 1), got {frame.shape[0]}")
    return FrameIn(
        stream=request.correlation_id(),
        # A copy: the stream keeps this frame after the request, and its input buffer, released.
        frame=frame[0].clone(),
        start=_flag(request, "START"),
        end=_flag(request, "END"),
    )


def _flag(request, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return bool(tensor is not None and tensor.as_numpy().reshape(-1)[0])
