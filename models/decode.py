"""Encoded images (JPEG, PNG) -> uint8 (H, W, 3) RGB tensors.

On CPU Pillow decodes (libjpeg-turbo inside its wheel). On a GPU, JPEGs go through nvJPEG with
`torchvision.io.decode_jpeg(device="cuda")` when torchvision is installed, so the decoded pixels
never cross PCIe; anything else falls back to Pillow and is copied up. TRITONFLEET_GPU_JPEG=0 turns
nvJPEG off (to compare the two).

nvJPEG's throughput grows with the batch (on an H200, 729 1080p images/s one at a time, 4,139 at
64, 4,766 at 256), so `Decoder.decode_requests` hands every JPEG of a whole dynamic batch, across
requests, to one call.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A 1080p frame is 2 MP; this bounds a decompression bomb while leaving room for 8K stills.
MAX_PIXELS = 64 * 1024 * 1024


class ImageDecodeError(ValueError):
    """The bytes are empty, not JPEG/PNG, or corrupt."""


def image_format(data: bytes) -> str:
    if not data:
        raise ImageDecodeError("empty image: 0 bytes")
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    raise ImageDecodeError(f"not a JPEG or PNG image (first bytes {data[:8]!r})")


def whole_jpeg(data: bytes) -> bool:
    """A JPEG that ends with its end-of-image marker: what nvJPEG may decode.

    nvJPEG decodes a truncated JPEG without an error, into a partly black picture (seen on an H200),
    so JPEGs cut short (or followed by trailing bytes) go to Pillow, which reports them as corrupt.
    """
    return data.startswith(JPEG_MAGIC) and data.endswith(JPEG_END)


def decode_cpu(data: bytes) -> torch.Tensor:
    """Decode with Pillow to a uint8 (H, W, 3) RGB tensor on the CPU."""
    fmt = image_format(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageDecodeError(f"image of {image.width}x{image.height} is over {MAX_PIXELS} pixels")
            # load() inside the try: truncated data only shows while decoding the pixels.
            rgb = image.convert("RGB")
            array = np.asarray(rgb)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageDecodeError(f"corrupt {fmt.upper()} image: {exc}") from None
    return torch.from_numpy(array.copy())


class Decoder:
    """Decodes on `device`: nvJPEG for JPEGs on CUDA when torchvision has it, else Pillow."""

    def __init__(self, device: torch.device):
        self.device = device
        wanted = device.type == "cuda" and os.environ.get("TRITONFLEET_GPU_JPEG", "1") != "0"
        self._gpu_jpeg = _gpu_jpeg_decoder() if wanted else None

    @property
    def uses_gpu_jpeg(self) -> bool:
        return self._gpu_jpeg is not None

    def decode_requests(self, requests: list[list[bytes]]) -> list[list[torch.Tensor] | ImageDecodeError]:
        """Decode the images of several requests: per request its frames, or the error of its bad image.

        On the GPU every whole JPEG of every request goes to nvJPEG in one batch; anything else is
        decoded on its own. When the batch fails, each request is decoded on its own, so a corrupt
        image fails only the request that sent it.
        """
        batched = self._batch_decode([data for items in requests for data in items])
        frames = iter(batched or ())
        results: list[list[torch.Tensor] | ImageDecodeError] = []
        for items in requests:
            # This request's share of the batch is taken first, so a bad image in it cannot shift the next request's.
            mine = [next(frames) if batched is not None and whole_jpeg(data) else None for data in items]
            try:
                if batched is None:
                    results.append(self.decode_many(items))
                else:
                    results.append([frame if frame is not None else self.decode(data) for frame, data in zip(mine, items)])
            except ImageDecodeError as exc:
                results.append(exc)
        return results

    def _batch_decode(self, items: list[bytes]) -> list[torch.Tensor] | None:
        """nvJPEG's frames of the whole JPEGs among `items`, in order; None when there is no batch or it failed."""
        whole = [data for data in items if whole_jpeg(data)] if self._gpu_jpeg is not None else []
        if len(whole) < 2:
            return None
        try:
            return self._gpu_jpeg(whole, self.device)
        except RuntimeError:
            return None

    def decode_many(self, items: list[bytes]) -> list[torch.Tensor]:
        """Decode a request's images; on the GPU its JPEGs go to nvJPEG as one batch.

        A batch that fails is decoded again one by one, so the error names the bad image.
        """
        if self._gpu_jpeg is None or len(items) < 2 or not all(whole_jpeg(d) for d in items):
            return [self.decode(data) for data in items]
        try:
            return self._gpu_jpeg(items, self.device)
        except RuntimeError:
            return [self.decode(data) for data in items]

    def decode(self, data: bytes) -> torch.Tensor:
        if self._gpu_jpeg is not None and image_format(data) == "jpeg" and whole_jpeg(data):
            try:
                return self._gpu_jpeg(data, self.device)
            except RuntimeError as exc:
                # nvJPEG rejects what it cannot handle (progressive, CMYK): Pillow knows more.
                if "corrupt" in str(exc).lower():
                    raise ImageDecodeError(f"corrupt JPEG image: {exc}") from None
        return decode_cpu(data).to(self.device, non_blocking=True)


def _gpu_jpeg_decoder():
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(data, device: torch.device):
        """One JPEG -> (H, W, 3); a list of JPEGs -> a list, decoded in one nvJPEG batch."""
        items = data if isinstance(data, list) else [data]
        with warnings.catch_warnings():
            # nvJPEG only reads the encoded bytes: viewing the read-only request buffers spares a copy
            # of every image, and torch's warning about writes through such a view does not apply.
            warnings.simplefilter("ignore", UserWarning)
            encoded = [torch.frombuffer(item, dtype=torch.uint8) for item in items]
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        frames = [chw.permute(1, 2, 0) for chw in decoded]
        return frames if isinstance(data, list) else frames[0]

    return decode
