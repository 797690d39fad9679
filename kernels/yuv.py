"""What the video decoder gives -> model input: YUV 4:2:0 planes to resized, normalized NCHW RGB.

NVDEC (`pynvvideocodec`) decodes to NV12: a full-resolution luma plane Y and a half-resolution
plane of interleaved chroma pairs (U, V); PyAV/FFmpeg decode to I420 (`yuv420p`): Y, U and V as
three planes. `nv12_to_tensor(y, uv, size)` and `i420_to_tensor(y, u, v, size)` turn either into
(N, 3, size[0], size[1]) float16/float32, RGB, in one pass over the planes:

1. each plane is resized to the output geometry (`size`, or with `letterbox=True` the largest
   size that keeps the frame's aspect ratio, centred and padded with `pad_value`), antialiased
   exactly as `torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)`; chroma is
   taken as centred between its luma samples, as FFmpeg's swscale upsamples it (the tests check
   the conversion against swscale's); H.264's default left siting lies a quarter of a luma pixel
   away, far below one output pixel after a downscale;
2. the resized Y, U, V are converted to RGB with the BT.601 or BT.709 matrix, limited (studio,
   Y 16-235) or full range, and clamped to [0, 255];
3. RGB is scaled to [0, 1] and normalized per channel with `mean` and `std`.

Converting after resampling (both are linear, and the clamp comes last) means nothing is rounded
to 8-bit RGB on the way and the matrix runs on output pixels only. CUDA planes go to the Triton
kernel, CPU planes to the plain torch references (`kernels._dispatch` documents the override).

The kernel: one program computes a BLOCK_OY x BLOCK_OX tile of the output, all three channels.
The colour matrix is folded into the horizontal resize weights (`kernels._resample`), so the
luma plane and the chroma plane(s) each add their resize-and-convert to one accumulator, and the
conversion costs no pass of its own. Memory traffic per frame: 1.5 bytes per input pixel read
once from DRAM (Y, then U and V at a quarter of the pixels each), 3 x 2 or 3 x 4 bytes per output
pixel written once; eager torch instead writes and re-reads float32 planes at input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import triton
import triton.language as tl

from kernels._dispatch import launch, use_triton
from kernels._resample import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPRETER_TILE,
    accumulate_resampled,
    axis_params,
    check_output_args,
    kernel_normalization,
    letterbox_geometry,
    normalize_and_pad_reference,
    normalize_and_store,
    output_slots,
    per_channel,
    resize_reference,
    tile_configs,
    tile_grid,
)

# (Kr, Kb) of each standard: the luma weights of red and blue.
STANDARDS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def yuv_to_rgb_matrix(standard: str, full_range: bool) -> tuple[list[list[float]], list[float]]:
    """(M, offset) with RGB = M @ (Y, U, V) + offset, all in [0, 255] units (before the clamp)."""
    kr, kb = STANDARDS[standard]
    kg = 1.0 - kr - kb
    y_scale, c_scale, y_zero = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    matrix = [
        [y_scale, 0.0, c_scale * 2 * (1 - kr)],
        [y_scale, -c_scale * 2 * kb * (1 - kb) / kg, -c_scale * 2 * kr * (1 - kr) / kg],
        [y_scale, c_scale * 2 * (1 - kb), 0.0],
    ]
    offset = [-(row[0] * y_zero + (row[1] + row[2]) * 128.0) for row in matrix]
    return matrix, offset


def split_nv12(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H*3/2, W) NV12 surface -> views y (..., H, W) and uv (..., H/2, W/2, 2), no copy."""
    height, width = _packed_420_size(frame, "NV12")
    return frame[..., :height, :], frame[..., height:, :].unflatten(-1, (width // 2, 2))


def split_i420(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., H*3/2, W) I420 buffer (Y, then U, then V, each packed) -> views y, u, v, no copy."""
    height, width = _packed_420_size(frame, "I420")
    if frame.stride(-2) != width:
        raise ValueError("an I420 frame's rows must be packed (row stride W): U and V span rows")
    # Each chroma plane is H/2 x W/2 bytes packed, a quarter of the buffer's rows: re-view them.
    chroma = frame[..., height:, :].reshape(*frame.shape[:-2], 2, height // 2, width // 2)
    return frame[..., :height, :], chroma[..., 0, :, :], chroma[..., 1, :, :]


def nv12_to_tensor(
    y: torch.Tensor,
    uv: torch.Tensor,
    size: tuple[int, int],
    *,
    standard: str = "bt709",
    full_range: bool = False,
    letterbox: bool = False,
    pad_value: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """y (N, H, W) or (H, W) and uv (N, ceil(H/2), ceil(W/2), 2) uint8 -> (N, 3, *size) RGB."""
    run = nv12_to_tensor_triton if use_triton(y) else nv12_to_tensor_reference
    # The implementation checks the inputs, once; bad input gets the same error from either.
    return run(
        y, uv, size, standard=standard, full_range=full_range, letterbox=letterbox,
        pad_value=pad_value, mean=mean, std=std, dtype=dtype,
    )


def i420_to_tensor(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    size: tuple[int, int],
    *,
    standard: str = "bt709",
    full_range: bool = False,
    letterbox: bool = False,
    pad_value: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """y (N, H, W) or (H, W), u and v (N, ceil(H/2), ceil(W/2)) uint8 -> (N, 3, *size) RGB."""
    run = i420_to_tensor_triton if use_triton(y) else i420_to_tensor_reference
    return run(
        y, u, v, size, standard=standard, full_range=full_range, letterbox=letterbox,
        pad_value=pad_value, mean=mean, std=std, dtype=dtype,
    )


def nv12_to_tensor_reference(y, uv, size, **options) -> torch.Tensor:
    """Plain torch version of `nv12_to_tensor` (same keywords)."""
    y, (uv,), conversion = check_inputs(y, (uv,), size, **options)
    return _reference(y, uv.permute(0, 3, 1, 2), conversion)


def i420_to_tensor_reference(y, u, v, size, **options) -> torch.Tensor:
    """Plain torch version of `i420_to_tensor` (same keywords)."""
    y, (u, v), conversion = check_inputs(y, (u, v), size, **options)
    return _reference(y, torch.stack([u, v], dim=1), conversion)


def nv12_to_tensor_triton(y, uv, size, **options) -> torch.Tensor:
    """Launch wrapper of `nv12_to_tensor`: validate, allocate, launch once."""
    return _launch(*check_inputs(y, (uv,), size, **options))


def i420_to_tensor_triton(y, u, v, size, **options) -> torch.Tensor:
    """Launch wrapper of `i420_to_tensor`: validate, allocate, launch once."""
    return _launch(*check_inputs(y, (u, v), size, **options))


@dataclass(frozen=True)
class Conversion:
    """What the planes become: the keywords of `nv12_to_tensor`, checked when made."""

    size: tuple[int, int]
    standard: str = "bt709"
    full_range: bool = False
    letterbox: bool = False
    pad_value: float = 0.0
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.standard not in STANDARDS:
            raise ValueError(f"standard must be one of {sorted(STANDARDS)}, got {self.standard!r}")
        check_output_args(self.size, self.mean, self.std, self.dtype)

    def geometry(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(resized_h, resized_w, top, left) of a height x width frame in the output."""
        return letterbox_geometry(height, width, self.size, self.letterbox)


def _reference(y: torch.Tensor, chroma: torch.Tensor, conversion: Conversion) -> torch.Tensor:
    """y (N, H, W), chroma (N, 2, H/2, W/2): resize each plane, convert, clamp, normalize."""
    c = conversion
    rh, rw, top, left = c.geometry(y.shape[1], y.shape[2])
    luma = resize_reference(y.unsqueeze(1).to(torch.float32), (rh, rw))
    chroma = resize_reference(chroma.to(torch.float32), (rh, rw))
    matrix, offset = yuv_to_rgb_matrix(c.standard, c.full_range)
    m = torch.tensor(matrix, dtype=torch.float32, device=y.device)
    b = torch.tensor(offset, dtype=torch.float32, device=y.device).view(1, 3, 1, 1)
    rgb = torch.einsum("ck,nkhw->nchw", m, torch.cat([luma, chroma], dim=1)) + b
    rgb = rgb.clamp(0.0, 255.0)
    return normalize_and_pad_reference(rgb, c.size, top, left, c.mean, c.std, c.pad_value).to(c.dtype)


def check_inputs(y, chroma: tuple, size, **options) -> tuple[torch.Tensor, tuple, Conversion]:
    """Validate a call: y as (N, H, W), the chroma planes with their batch dimension, and the
    checked `Conversion`."""
    names = ("uv",) if len(chroma) == 1 else ("u", "v")
    for name, t in (("y", y), *zip(names, chroma)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.uint8:
            raise ValueError(f"{name} must be uint8, got {t.dtype}")
    if y.dim() not in (2, 3) or y.numel() == 0:
        raise ValueError(f"y must be (H, W) or (N, H, W) and not empty, got shape {tuple(y.shape)}")
    batched = y.dim() == 3
    height, width = y.shape[-2:]
    expected = ((height + 1) // 2, (width + 1) // 2) + ((2,) if names == ("uv",) else ())
    expected = ((y.shape[0],) if batched else ()) + expected
    for name, t in zip(names, chroma):
        if tuple(t.shape) != expected:
            raise ValueError(
                f"{name} must be {expected} for y of shape {tuple(y.shape)} (4:2:0), got {tuple(t.shape)}"
            )
    if len({t.device for t in (y, *chroma)}) != 1:
        raise ValueError("y and the chroma planes must be on one device")
    conversion = Conversion(size, **options)
    if batched:
        return y, tuple(chroma), conversion
    return y.unsqueeze(0), tuple(t.unsqueeze(0) for t in chroma), conversion


def _packed_420_size(frame, layout: str) -> tuple[int, int]:
    if not isinstance(frame, torch.Tensor) or frame.dtype != torch.uint8 or frame.dim() < 2:
        raise ValueError(f"an {layout} frame must be a uint8 tensor of shape (..., H*3/2, W)")
    rows, width = frame.shape[-2:]
    height = rows * 2 // 3
    if rows % 3 or height % 2 or width % 2 or height == 0:
        raise ValueError(
            f"an {layout} frame must be (..., H*3/2, W) with H and W even, got shape {tuple(frame.shape)}"
        )
    if frame.stride(-1) != 1:
        raise ValueError(f"an {layout} frame's rows must be contiguous (column stride 1)")
    return height, width


def _row_is_one_run(plane: torch.Tensor) -> bool:
    """Whether a (N, h, w) plane's or (N, h, w, 2) pair plane's rows are contiguous runs of bytes."""
    return plane.stride(-1) == 1 and (plane.dim() == 3 or plane.stride(-2) == 2)


@triton.jit
def _yuv_kernel(
    y, u, v, out,
    sy_n, sy_h, su_n, su_h, sv_n, sv_h,
    in_h, in_w, c_h, c_w, out_h, out_w, rh, rw, top, left,
    scale_y, support_y, invscale_y, scale_x, support_x, invscale_x,
    cscale_y, csupport_y, cinvscale_y, cscale_x, csupport_x, cinvscale_x,
    m00, m01, m02, m10, m11, m12, m20, m21, m22, off0, off1, off2,
    mean0, mean1, mean2, inv_std0, inv_std1, inv_std2, pad0, pad1, pad2,
    PLANAR: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_OY: tl.constexpr, BLOCK_OX: tl.constexpr, CHUNK_Y: tl.constexpr, CHUNK_F: tl.constexpr,
):
    n = tl.program_id(1).to(tl.int64)
    out += n * 3 * out_h * out_w
    oy, slot_c, ox = output_slots(tl.program_id(0), out_w, BLOCK_OY, BLOCK_OX)
    # Output rows/columns outside the resized region are letterbox padding: empty windows.
    valid_y = (oy >= top) & (oy < top + rh)
    valid_x = (ox >= left) & (ox < left + rw)
    r_y = oy - top
    r_x = ox - left
    # Column k of the colour matrix, per output slot: what plane channel k adds to R, G and B.
    mix_y = per_channel(slot_c, m00, m10, m20)
    mix_u = per_channel(slot_c, m01, m11, m21)
    mix_v = per_channel(slot_c, m02, m12, m22)
    acc = tl.zeros([BLOCK_OY, 4 * BLOCK_OX], dtype=tl.float32)
    acc = accumulate_resampled(
        acc, y + n * sy_n, sy_h, in_h, in_w, r_y, valid_y, r_x, valid_x, slot_c,
        scale_y, support_y, invscale_y, scale_x, support_x, invscale_x, mix_y, mix_y, mix_y,
        1, SPLIT, BLOCK_OY, CHUNK_Y, CHUNK_F,
    )
    if PLANAR:
        acc = accumulate_resampled(
            acc, u + n * su_n, su_h, c_h, c_w, r_y, valid_y, r_x, valid_x, slot_c,
            cscale_y, csupport_y, cinvscale_y, cscale_x, csupport_x, cinvscale_x, mix_u, mix_u, mix_u,
            1, SPLIT, BLOCK_OY, CHUNK_Y, CHUNK_F,
        )
        acc = accumulate_resampled(
            acc, v + n * sv_n, sv_h, c_h, c_w, r_y, valid_y, r_x, valid_x, slot_c,
            cscale_y, csupport_y, cinvscale_y, cscale_x, csupport_x, cinvscale_x, mix_v, mix_v, mix_v,
            1, SPLIT, BLOCK_OY, CHUNK_Y, CHUNK_F,
        )
    else:
        # NV12: one plane of (U, V) byte pairs, both channels in one pass over its rows.
        acc = accumulate_resampled(
            acc, u + n * su_n, su_h, c_h, c_w, r_y, valid_y, r_x, valid_x, slot_c,
            cscale_y, csupport_y, cinvscale_y, cscale_x, csupport_x, cinvscale_x, mix_u, mix_v, mix_v,
            2, SPLIT, BLOCK_OY, CHUNK_Y, CHUNK_F,
        )
    # Every valid slot's weights sum to 1 per plane, so the matrix's offset is added once here.
    rgb = acc + per_channel(slot_c, off0, off1, off2)[None, :]
    rgb = tl.minimum(tl.maximum(rgb, 0.0), 255.0)
    normalize_and_store(
        out, rgb, oy, ox, slot_c, valid_y[:, None] & valid_x[None, :], out_h, out_w,
        mean0, mean1, mean2, inv_std0, inv_std1, inv_std2, pad0, pad1, pad2,
    )


_yuv_autotuned = triton.autotune(
    configs=tile_configs(), key=["in_h", "in_w", "out_h", "out_w", "rh", "rw", "PLANAR", "SPLIT"]
)(_yuv_kernel)


def _launch(y: torch.Tensor, chroma: tuple, conversion: Conversion) -> torch.Tensor:
    """y (N, H, W) and (uv,) or (u, v), checked: allocate (N, 3, *size) and launch once."""
    out, args, flags, grid = kernel_call(y, chroma, conversion)
    launch(_yuv_autotuned, tile_configs(), grid, args, flags, INTERPRETER_TILE)
    return out


def kernel_call(y: torch.Tensor, chroma: tuple, conversion: Conversion):
    """What one launch of `_yuv_kernel` takes for checked inputs: (out, args, flags, grid), the
    output allocated; `bench/kernels/sweep.py` launches it with each tile config in turn."""
    n, in_h, in_w = y.shape
    c_h, c_w = chroma[0].shape[1:3]
    out_h, out_w = conversion.size
    rh, rw, top, left = conversion.geometry(in_h, in_w)
    # The kernel reads each row as one run of bytes (pixels, or U/V pairs); rows may be strided,
    # as in a decoder's pitched surface.
    y = y if y.stride(2) == 1 else y.contiguous()
    chroma = [c if _row_is_one_run(c) else c.contiguous() for c in chroma]
    u, v = (chroma[0], chroma[0]) if len(chroma) == 1 else chroma
    out = torch.empty((n, 3, out_h, out_w), dtype=conversion.dtype, device=y.device)
    matrix, offset = yuv_to_rgb_matrix(conversion.standard, conversion.full_range)
    args = (
        y, u, v, out, y.stride(0), y.stride(1), u.stride(0), u.stride(1), v.stride(0), v.stride(1),
        in_h, in_w, c_h, c_w, out_h, out_w, rh, rw, top, left,
        *axis_params(in_h, rh), *axis_params(in_w, rw), *axis_params(c_h, rh), *axis_params(c_w, rw),
        *(m for row in matrix for m in row), *offset,
        *kernel_normalization(conversion.mean, conversion.std, conversion.pad_value),
    )
    flags = dict(PLANAR=len(chroma) == 2, SPLIT=conversion.dtype == torch.float32)
    return out, args, flags, tile_grid(out_h, out_w, n)
