"""Image preprocessing: uint8 HWC frames -> resized, normalized NCHW float tensors.

`preprocess` is the entry point the models call: CUDA frames go to the Triton-language kernel in
`kernels.preprocess_triton`, CPU frames to `preprocess_reference`, the plain torch version of the
same math (see `kernels._dispatch` for the override). Both:

1. resize each frame bilinearly to `size` (or, with `letterbox=True`, to the largest size that keeps
   its aspect ratio, centred and padded with `pad_value`), antialiased when downscaling exactly as
   torchvision's `antialias=True` (which is `torch.nn.functional.interpolate(..., antialias=True)`);
2. scale to [0, 1] and normalize per channel with `mean` and `std`;
3. return (N, 3, size[0], size[1]) in `dtype`, channels always in RGB order.

`pad_value` is a pixel value in [0, 255] units (114 is the usual YOLO grey); it goes through the
same normalization as the pixels, so a padded border looks like a frame of that colour.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from kernels._dispatch import use_triton

# ImageNet statistics, the usual normalization for torchvision classifiers.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OUTPUT_DTYPES = (torch.float16, torch.float32)
CHANNEL_ORDERS = ("RGB", "BGR")

Frames = torch.Tensor | Sequence[torch.Tensor]


def preprocess(
    frames: Frames,
    size: tuple[int, int],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    letterbox: bool = False,
    pad_value: float = 0.0,
    channel_order: str = "RGB",
) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames, or a list of (H, W, 3) -> (N, 3, size[0], size[1]) in `dtype`."""
    first = check_inputs(frames, size, mean, std, dtype, channel_order)
    kwargs = dict(
        mean=mean, std=std, dtype=dtype, letterbox=letterbox, pad_value=pad_value,
        channel_order=channel_order,
    )
    if use_triton(first):
        from kernels.preprocess_triton import preprocess_triton

        return preprocess_triton(frames, size, **kwargs)
    return preprocess_reference(frames, size, **kwargs)


def preprocess_reference(
    frames: Frames,
    size: tuple[int, int],
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    letterbox: bool = False,
    pad_value: float = 0.0,
    channel_order: str = "RGB",
) -> torch.Tensor:
    """Plain torch version of `preprocess`: interpolate (antialias), normalize, pad, cast."""
    first = check_inputs(frames, size, mean, std, dtype, channel_order)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=first.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=first.device).view(1, 3, 1, 1)
    groups = [frames] if isinstance(frames, torch.Tensor) else [f.unsqueeze(0) for f in frames]
    outputs = []
    for batch in groups:
        rh, rw, top, left = letterbox_geometry(batch.shape[1], batch.shape[2], size, letterbox)
        x = batch.permute(0, 3, 1, 2).to(torch.float32)
        if channel_order == "BGR":
            x = x.flip(1)
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        x = (x / 255.0 - mean_t) / std_t
        if (rh, rw) != tuple(size):
            pad = (pad_value / 255.0 - mean_t) / std_t
            canvas = pad.expand(x.shape[0], 3, size[0], size[1]).clone()
            canvas[:, :, top : top + rh, left : left + rw] = x
            x = canvas
        outputs.append(x)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return out.to(dtype)


def letterbox_geometry(
    height: int, width: int, size: tuple[int, int], letterbox: bool
) -> tuple[int, int, int, int]:
    """Where the resized frame lands in the output: (resized_h, resized_w, top, left)."""
    out_h, out_w = size
    if not letterbox:
        return out_h, out_w, 0, 0
    scale = min(out_h / height, out_w / width)
    rh = min(out_h, max(1, round(height * scale)))
    rw = min(out_w, max(1, round(width * scale)))
    return rh, rw, (out_h - rh) // 2, (out_w - rw) // 2


def check_inputs(frames, size, mean, std, dtype, channel_order) -> torch.Tensor:
    """Validate everything `preprocess` takes; return the first frame tensor (for its device)."""
    if isinstance(frames, torch.Tensor):
        _check_frame_tensor(frames, batched=True)
        first = frames
    elif isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("frames must not be an empty list")
        for i, frame in enumerate(frames):
            if not isinstance(frame, torch.Tensor):
                raise ValueError(f"frames[{i}] must be a torch.Tensor, got {type(frame).__name__}")
            _check_frame_tensor(frame, batched=False, name=f"frames[{i}]")
        first = frames[0]
        devices = {f.device for f in frames}
        if len(devices) > 1:
            raise ValueError(f"all frames must be on one device, got {sorted(map(str, devices))}")
    else:
        raise ValueError(f"frames must be a tensor or a list of tensors, got {type(frames).__name__}")
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 values each, got {len(mean)} and {len(std)}")
    if any(s == 0 for s in std):
        raise ValueError(f"std must not contain zeros, got {tuple(std)}")
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype must be torch.float16 or torch.float32, got {dtype}")
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    return first


def _check_frame_tensor(frames: torch.Tensor, batched: bool, name: str = "frames") -> None:
    expected = "(N, H, W, 3)" if batched else "(H, W, 3)"
    if frames.dtype != torch.uint8:
        raise ValueError(f"{name} must be uint8, got {frames.dtype}")
    if frames.dim() != (4 if batched else 3) or frames.shape[-1] != 3:
        raise ValueError(f"{name} must be {expected} with 3 channels, got shape {tuple(frames.shape)}")
    if frames.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(frames.shape)}")
