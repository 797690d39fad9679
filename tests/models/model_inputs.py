"""Inputs for the model tests: encoded photographs, synthetic camera-sized pictures, Triton tensors."""

from __future__ import annotations

import io

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """A camera-sized test picture: smooth gradients plus seeded coloured rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    image = image.astype(np.uint8)
    for _ in range(12):
        top, left = rng.integers(0, height - height // 4), rng.integers(0, width - width // 4)
        image[top : top + height // 4, left : left + width // 4] = rng.integers(0, 256, 3)
    return image


def image_input(images: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("IMAGE", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(-1, 1))
    return tensor


def frame_input(name: str, frames: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(frames.shape), "UINT8")
    tensor.set_data_from_numpy(frames)
    return tensor
