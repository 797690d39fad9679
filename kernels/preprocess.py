"""Image preprocessing: uint8 HWC frames -> resized, normalized NCHW float tensors.

`preprocess` is the entry point the models call: CUDA frames go to the Triton-language kernel
(`preprocess_triton`), CPU frames to `preprocess_reference`, the plain torch version of the same
math (see `kernels._dispatch` for the override). Both:

1. resize each frame bilinearly to `size` (or, with `letterbox=True`, to the largest size that keeps
   its aspect ratio, centred and padded with `pad_value`), antialiased when downscaling exactly as
   torchvision's `antialias=True` (which is `torch.nn.functional.interpolate(..., antialias=True)`);
2. scale to [0, 1] and normalize per channel with `mean` and `std`;
3. return (N, 3, size[0], size[1]) in `dtype`, channels always in RGB order.

`pad_value` is a pixel value in [0, 255] units (114 is the usual YOLO grey); it goes through the
same normalization as the pixels, so a padded border looks like a frame of that colour.

The kernel: one program computes a BLOCK_OY x BLOCK_OX tile of the output, all three channels, in
one pass over the input window that tile needs (`kernels._resample.accumulate_resampled`, with
the identity as its channel mix, or the channel flip for BGR). Memory traffic: every input byte
read once from DRAM, every output element written once, no intermediate in memory.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from kernels._dispatch import launch, use_triton
from kernels._resample import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPRETER_TILE,
    OUTPUT_DTYPES,
    accumulate_resampled,
    axis_params,
    check_output_args,
    kernel_normalization,
    letterbox_geometry,
    normalize_and_pad_reference,
    normalize_and_store,
    output_slots,
    resize_reference,
    tile_configs,
    tile_grid,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "OUTPUT_DTYPES", "CHANNEL_ORDERS", "letterbox_geometry",
    "preprocess", "preprocess_reference", "preprocess_triton",
]

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
    first = frames[0] if isinstance(frames, (list, tuple)) and frames else frames
    run = preprocess_triton if use_triton(first) else preprocess_reference
    # The implementation checks the inputs, once; bad input gets the same error from either.
    return run(
        frames, size, mean=mean, std=std, dtype=dtype, letterbox=letterbox, pad_value=pad_value,
        channel_order=channel_order,
    )


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
    check_inputs(frames, size, mean, std, dtype, channel_order)
    outputs = []
    for batch in _batches(frames):
        rh, rw, top, left = letterbox_geometry(batch.shape[1], batch.shape[2], size, letterbox)
        x = batch.permute(0, 3, 1, 2).to(torch.float32)
        if channel_order == "BGR":
            x = x.flip(1)
        x = resize_reference(x, (rh, rw))
        outputs.append(normalize_and_pad_reference(x, size, top, left, mean, std, pad_value))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return out.to(dtype)


def preprocess_triton(
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
    """Launch wrapper: validate, allocate (N, 3, *size), launch once per frame geometry."""
    first = check_inputs(frames, size, mean, std, dtype, channel_order)
    batches = _batches(frames)
    count = sum(b.shape[0] for b in batches)
    out = torch.empty((count, 3, size[0], size[1]), dtype=dtype, device=first.device)
    normalization = kernel_normalization(mean, std, pad_value)
    row = 0
    for batch in batches:
        _launch(batch, out[row : row + batch.shape[0]], size, normalization, letterbox, channel_order)
        row += batch.shape[0]
    return out


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
    check_output_args(size, mean, std, dtype)
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


def _batches(frames: Frames) -> list[torch.Tensor]:
    """Groups of frames of one geometry: the whole batch, or each listed frame on its own."""
    return [frames] if isinstance(frames, torch.Tensor) else [f.unsqueeze(0) for f in frames]


@triton.jit
def _resize_normalize_kernel(
    src, out,
    stride_n, stride_h,
    in_h, in_w, out_h, out_w,
    rh, rw, top, left,
    scale_y, support_y, invscale_y, scale_x, support_x, invscale_x,
    mean0, mean1, mean2, inv_std0, inv_std1, inv_std2, pad0, pad1, pad2,
    BGR: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_OY: tl.constexpr, BLOCK_OX: tl.constexpr, CHUNK_Y: tl.constexpr, CHUNK_F: tl.constexpr,
):
    n = tl.program_id(1).to(tl.int64)
    src += n * stride_n
    out += n * 3 * out_h * out_w
    oy, slot_c, ox = output_slots(tl.program_id(0), out_w, BLOCK_OY, BLOCK_OX)
    # Output rows/columns outside the resized region are letterbox padding: empty windows.
    valid_y = (oy >= top) & (oy < top + rh)
    valid_x = (ox >= left) & (ox < left + rw)
    # Channel k of the input feeds output slot k (RGB) or 2 - k (BGR): a 0/1 mix.
    if BGR:
        slot_c_in = 2 - slot_c
    else:
        slot_c_in = slot_c
    acc = tl.zeros([BLOCK_OY, 4 * BLOCK_OX], dtype=tl.float32)
    acc = accumulate_resampled(
        acc, src, stride_h, in_h, in_w, oy - top, valid_y, ox - left, valid_x, slot_c,
        scale_y, support_y, invscale_y, scale_x, support_x, invscale_x,
        (slot_c_in == 0).to(tl.float32), (slot_c_in == 1).to(tl.float32), (slot_c_in == 2).to(tl.float32),
        3, SPLIT, BLOCK_OY, CHUNK_Y, CHUNK_F,
    )
    normalize_and_store(
        out, acc, oy, ox, slot_c, valid_y[:, None] & valid_x[None, :], out_h, out_w,
        mean0, mean1, mean2, inv_std0, inv_std1, inv_std2, pad0, pad1, pad2,
    )


_resize_normalize_autotuned = triton.autotune(
    configs=tile_configs(), key=["in_h", "in_w", "out_h", "out_w", "rh", "rw", "SPLIT"]
)(_resize_normalize_kernel)


def _launch(batch, out, size, normalization, letterbox, channel_order) -> None:
    n, in_h, in_w, _ = batch.shape
    out_h, out_w = size
    rh, rw, top, left = letterbox_geometry(in_h, in_w, size, letterbox)
    if batch.stride(3) != 1 or batch.stride(2) != 3:
        # The kernel reads each row as one run of W*3 bytes; rows themselves may be strided.
        batch = batch.contiguous()
    args = (
        batch, out, batch.stride(0), batch.stride(1), in_h, in_w, out_h, out_w,
        rh, rw, top, left, *axis_params(in_h, rh), *axis_params(in_w, rw), *normalization,
    )
    flags = dict(BGR=channel_order == "BGR", SPLIT=out.dtype == torch.float32)
    launch(
        _resize_normalize_autotuned, tile_configs(), tile_grid(out_h, out_w, n), args, flags,
        INTERPRETER_TILE,
    )
