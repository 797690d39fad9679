"""What the load generator sends: images and video frames, encoded once into gRPC request bytes.

Requests are serialized `ModelInferRequest`s made before the run, so workers only copy bytes.
Protobuf lets two serialized messages be concatenated into their merge, which is how a per-frame
header (request id, sequence id, start/end flags) is added to a frame's pre-encoded body for free.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tritonclient.grpc import service_pb2

RESOLUTIONS = {"480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry")
DATATYPES = ("BYTES", "UINT8")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class TensorSpec:
    """The model's input: its name, datatype (BYTES for encoded images, UINT8 for raw), batching."""

    model: str
    input: str = "IMAGE"
    datatype: str = "BYTES"
    batch_size: int = 1
    batch_dim: bool = True  # the model has max_batch_size > 0, so tensors carry a leading batch dim
    jpeg_quality: int = 90

    def __post_init__(self):
        if self.datatype not in DATATYPES:
            raise ValueError(f"datatype must be one of {DATATYPES}, got {self.datatype!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.batch_dim and self.batch_size != 1:
            raise ValueError("a batch size above 1 needs a model with a batch dimension")


def parse_resolution(text: str) -> tuple[int, int]:
    """`480p`, `1080p`, `4k`, or `WIDTHxHEIGHT` -> (height, width)."""
    key = text.lower()
    if key in RESOLUTIONS:
        return RESOLUTIONS[key]
    try:
        width, height = (int(part) for part in key.split("x"))
    except ValueError:
        raise ValueError(f"resolution {text!r}: use one of {sorted(RESOLUTIONS)} or WIDTHxHEIGHT") from None
    return height, width


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """Gradients plus noise: compresses like a photograph would, not like a flat colour."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    base = np.stack([(x + y) / 2, np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width))], -1)
    noise = rng.normal(0, 20, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def load_images(source: str, count: int, resolution: str = "480p") -> list[np.ndarray]:
    """RGB uint8 images: `synthetic`, `skimage` (its bundled photographs), or a folder of image files."""
    if count < 1:
        raise ValueError("need at least one image")
    if source == "synthetic":
        height, width = parse_resolution(resolution)
        return [synthetic_image(height, width, seed) for seed in range(count)]
    if source == "skimage":
        import skimage.data

        photos = []
        for name in SKIMAGE_PHOTOS:
            loader = getattr(skimage.data, name, None)
            image = loader() if loader else None
            if isinstance(image, tuple):  # stereo pairs come as (left, right, disparity)
                image = image[0]
            if image is not None and image.ndim == 3 and image.shape[2] == 3:
                photos.append(np.ascontiguousarray(image, dtype=np.uint8))
        return [photos[i % len(photos)] for i in range(count)]
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"image source {source!r} is neither 'synthetic', 'skimage' nor a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return [np.asarray(Image.open(path).convert("RGB")) for path in files[:count]]


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _bytes_tensor(items: list[bytes]) -> bytes:
    """Triton's BYTES wire format: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def request_body(spec: TensorSpec, images: list[np.ndarray]) -> bytes:
    """A serialized ModelInferRequest carrying `images` as one batch."""
    if spec.datatype == "BYTES":
        content = _bytes_tensor([encode_jpeg(image, spec.jpeg_quality) for image in images])
        shape = [len(images), 1] if spec.batch_dim else [1]
    else:
        first = images[0].shape
        resized = [image if image.shape == first else _resize(image, first) for image in images]
        content = np.ascontiguousarray(np.stack(resized)).tobytes()
        shape = [len(images), *first] if spec.batch_dim else list(first)
    request = service_pb2.ModelInferRequest(model_name=spec.model)
    request.inputs.add(name=spec.input, datatype=spec.datatype, shape=shape)
    request.raw_input_contents.append(content)
    return request.SerializeToString()


def _resize(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # Raw tensors in one batch must share a shape, so odd-sized photographs are fitted to the first.
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0])))


def image_requests(spec: TensorSpec, images: list[np.ndarray]) -> list[bytes]:
    """One request per `batch_size` images, cycling through the images."""
    count = max(1, len(images) // spec.batch_size)
    return [
        request_body(spec, [images[(i * spec.batch_size + j) % len(images)] for j in range(spec.batch_size)])
        for i in range(count)
    ]


def sequence_header(correlation_id: int, start: bool, end: bool, request_id: str = "") -> bytes:
    """The per-frame part of a sequence request, to append to a pre-encoded body."""
    request = service_pb2.ModelInferRequest(id=request_id)
    request.parameters["sequence_id"].int64_param = correlation_id
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    return request.SerializeToString()


def synthetic_clip(height: int, width: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    """A camera-like clip: a textured background with a few bright boxes moving across it."""
    rng = np.random.default_rng(seed)
    background = synthetic_image(height, width, seed)
    objects = [
        (rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-8, 8), rng.uniform(-5, 5),
         int(rng.integers(height // 12, height // 5)), rng.integers(0, 255, 3))
        for _ in range(4)
    ]
    clip = []
    for index in range(frames):
        frame = background.copy()
        for x0, y0, dx, dy, size, colour in objects:
            x = int(x0 + dx * index) % width
            y = int(y0 + dy * index) % height
            frame[y : y + size, x : x + size] = colour
        clip.append(frame)
    return clip


def video_file_frames(path: str, frames: int) -> list[np.ndarray]:
    """Decode up to `frames` RGB frames from a video file with PyAV or OpenCV, whichever is installed."""
    try:
        import av

        with av.open(path) as container:
            decoded = []
            for frame in container.decode(video=0):
                decoded.append(frame.to_ndarray(format="rgb24"))
                if len(decoded) >= frames:
                    break
            return decoded
    except ImportError:
        pass
    try:
        import cv2
    except ImportError:
        raise ValueError("decoding a video file needs PyAV (`pip install av`) or OpenCV") from None
    capture = cv2.VideoCapture(path)
    decoded = []
    while len(decoded) < frames:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not decoded:
        raise ValueError(f"no frames could be decoded from {path}")
    return decoded


def frame_bodies(spec: TensorSpec, frames: list[np.ndarray]) -> list[bytes]:
    """One pre-encoded request body per frame of the clip."""
    return [request_body(spec, [frame]) for frame in frames]
