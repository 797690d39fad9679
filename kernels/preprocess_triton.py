"""The Triton-language kernel behind `kernels.preprocess.preprocess` for CUDA frames.

One program computes a BLOCK_OY x BLOCK_OX tile of the output, all three channels, in one pass over
the input window that tile needs. The antialiased bilinear resize is separable, so per channel

    out_tile = Wy @ X @ Wx^T

with Wy (BLOCK_OY x rows) and Wx (BLOCK_OX x columns) the band matrices of torch's antialias
weights (a triangle filter of half-width `scale` when downscaling, plain bilinear when upscaling,
each row normalized to sum 1). Both products run on the tensor cores (`tl.dot`), in chunks of
CHUNK_Y x CHUNK_X input pixels, so registers stay bounded whatever the scale factor.

Precision: uint8 pixels are exact in float16. Weights and the intermediate Wy @ X are rounded to
float16 for the dots; for float32 output (SPLIT) each is split into a float16 high and low part
and the cross products are summed, which keeps float32-level accuracy (about 1e-6).

Memory traffic: every input byte is read once from DRAM (neighbouring tiles re-read their shared
halo, mostly from L2), each output element is written once; no intermediate touches memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._dispatch import interpreting
from kernels.preprocess import IMAGENET_MEAN, IMAGENET_STD, check_inputs, letterbox_geometry

# The interpreter runs one fixed configuration (autotuning would time every config through NumPy).
_INTERPRETER_CONFIG = dict(BLOCK_OY=16, BLOCK_OX=16, CHUNK_Y=16, CHUNK_X=32)


def _autotune_configs() -> list[triton.Config]:
    return [
        # Small tiles: many programs, so even a few small frames fill 132 SMs; right for upscaling.
        triton.Config(dict(BLOCK_OY=16, BLOCK_OX=16, CHUNK_Y=32, CHUNK_X=64), num_warps=4),
        # Wider tiles: the halo shared with neighbouring tiles shrinks relative to the tile, so
        # strong downscales (1080p, 4K) re-read fewer input pixels.
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=32, CHUNK_Y=32, CHUNK_X=64), num_warps=4),
        # Taller tiles: the vertical halo (2 * scale rows) is the larger one when scale_y is big.
        triton.Config(dict(BLOCK_OY=64, BLOCK_OX=32, CHUNK_Y=32, CHUNK_X=64), num_warps=8),
        # Longer chunks: fewer loop trips and more bytes in flight per load.
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=32, CHUNK_Y=64, CHUNK_X=128), num_warps=8),
    ]


@triton.jit
def _window(r, valid, scale, support, invscale, in_size):
    """torch's antialias window for resized coordinates r.

    Returns the filter centre minus 0.5 (so a tap's weight is 1 - |pos - centre| * invscale), the
    window [lo, hi) clamped to the image, and 1 / (sum of the window's weights), 0 for padding.
    """
    center = scale * (r.to(tl.float32) + 0.5)
    lo = tl.maximum(tl.floor(center - support + 0.5).to(tl.int32), 0)
    hi = tl.minimum(tl.floor(center + support + 0.5).to(tl.int32), in_size)
    hi = tl.where(valid, hi, lo)
    center -= 0.5
    total = tl.zeros_like(center)
    # A window holds at most 2 * support + 1 taps: sum them one tap at a time.
    for t in range(0, tl.max(hi - lo, axis=0)):
        pos = lo + t
        w = tl.maximum(1.0 - tl.abs(pos.to(tl.float32) - center) * invscale, 0.0)
        total += tl.where(pos < hi, w, 0.0)
    inv_total = tl.where(valid & (total > 0), 1.0 / tl.where(total > 0, total, 1.0), 0.0)
    return center, lo, hi, inv_total


@triton.jit
def _tap_weights(pos, center, inv_total, invscale, in_size):
    """Normalized weight of input index `pos` (broadcast against the outputs' windows).

    Outside a window the triangle is already <= 0, so only the image edge needs a mask.
    """
    w = tl.maximum(1.0 - tl.abs(pos.to(tl.float32) - center) * invscale, 0.0) * inv_total
    return tl.where(pos < in_size, w, 0.0)


@triton.jit
def _dot16(a, b, acc, SPLIT: tl.constexpr):
    """acc + a @ b on the tensor cores; with SPLIT, a and b as float16 high + low parts."""
    a_hi = a.to(tl.float16)
    b_hi = b.to(tl.float16)
    acc = tl.dot(a_hi, b_hi, acc)
    if SPLIT:
        a_lo = (a - a_hi.to(tl.float32)).to(tl.float16)
        b_lo = (b - b_hi.to(tl.float32)).to(tl.float16)
        acc = tl.dot(a_hi, b_lo, acc)
        acc = tl.dot(a_lo, b_hi, acc)
    return acc


@triton.jit
def _store_channel(out_ptr, acc, mean, inv_std, pad, oy, ox, out_h, out_w, inside):
    val = (acc * (1.0 / 255.0) - mean) * inv_std
    val = tl.where(inside, val, pad)
    mask = (oy[:, None] < out_h) & (ox[None, :] < out_w)
    tl.store(out_ptr + oy[:, None] * out_w + ox[None, :], val.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _resize_normalize_kernel(
    src, out,
    stride_n, stride_h, stride_w, stride_c,
    in_h, in_w, out_h, out_w,
    rh, rw, top, left,
    scale_y, support_y, invscale_y, scale_x, support_x, invscale_x,
    mean0, mean1, mean2, inv_std0, inv_std1, inv_std2, pad0, pad1, pad2,
    SPLIT: tl.constexpr,
    BLOCK_OY: tl.constexpr, BLOCK_OX: tl.constexpr, CHUNK_Y: tl.constexpr, CHUNK_X: tl.constexpr,
):
    tiles_x = tl.cdiv(out_w, BLOCK_OX)
    tile = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    src += n * stride_n
    out += n * 3 * out_h * out_w

    oy = (tile // tiles_x) * BLOCK_OY + tl.arange(0, BLOCK_OY)
    ox = (tile % tiles_x) * BLOCK_OX + tl.arange(0, BLOCK_OX)
    # Output rows/columns outside the resized region are letterbox padding: empty windows.
    valid_y = (oy >= top) & (oy < top + rh)
    valid_x = (ox >= left) & (ox < left + rw)
    cy, ylo, yhi, inv_y = _window(oy - top, valid_y, scale_y, support_y, invscale_y, in_h)
    cx, xlo, xhi, inv_x = _window(ox - left, valid_x, scale_x, support_x, invscale_x, in_w)
    # The input window of the whole tile (empty when the tile is all padding).
    y_start = tl.min(tl.where(valid_y, ylo, in_h), axis=0)
    y_end = tl.max(tl.where(valid_y, yhi, 0), axis=0)
    x_start = tl.min(tl.where(valid_x, xlo, in_w), axis=0)
    x_end = tl.max(tl.where(valid_x, xhi, 0), axis=0)
    n_chunks_y = tl.cdiv(tl.maximum(y_end - y_start, 0), CHUNK_Y)
    n_chunks_x = tl.cdiv(tl.maximum(x_end - x_start, 0), CHUNK_X)

    # out = (Wy @ X) @ Wx^T: column chunks outside, so each Wx chunk is built once; the
    # vertical pass U = Wy @ X runs down the rows of that column chunk.
    acc0 = tl.zeros([BLOCK_OY, BLOCK_OX], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_OY, BLOCK_OX], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_OY, BLOCK_OX], dtype=tl.float32)
    for kx in range(0, n_chunks_x):
        xx = x_start + kx * CHUNK_X + tl.arange(0, CHUNK_X)
        u0 = tl.zeros([BLOCK_OY, CHUNK_X], dtype=tl.float32)
        u1 = tl.zeros([BLOCK_OY, CHUNK_X], dtype=tl.float32)
        u2 = tl.zeros([BLOCK_OY, CHUNK_X], dtype=tl.float32)
        for ky in range(0, n_chunks_y):
            yy = y_start + ky * CHUNK_Y + tl.arange(0, CHUNK_Y)
            wy = _tap_weights(yy[None, :], cy[:, None], inv_y[:, None], invscale_y, in_h)
            ptrs = src + yy[:, None].to(tl.int64) * stride_h + xx[None, :] * stride_w
            mask = (yy[:, None] < y_end) & (xx[None, :] < x_end)
            # uint8 -> float16 is exact, so the pixel operand never needs a low part.
            p0 = tl.load(ptrs, mask=mask, other=0).to(tl.float16)
            p1 = tl.load(ptrs + stride_c, mask=mask, other=0).to(tl.float16)
            p2 = tl.load(ptrs + 2 * stride_c, mask=mask, other=0).to(tl.float16)
            wy_hi = wy.to(tl.float16)
            u0 = tl.dot(wy_hi, p0, u0)
            u1 = tl.dot(wy_hi, p1, u1)
            u2 = tl.dot(wy_hi, p2, u2)
            if SPLIT:
                wy_lo = (wy - wy_hi.to(tl.float32)).to(tl.float16)
                u0 = tl.dot(wy_lo, p0, u0)
                u1 = tl.dot(wy_lo, p1, u1)
                u2 = tl.dot(wy_lo, p2, u2)
        wx = _tap_weights(xx[:, None], cx[None, :], inv_x[None, :], invscale_x, in_w)
        acc0 = _dot16(u0, wx, acc0, SPLIT)
        acc1 = _dot16(u1, wx, acc1, SPLIT)
        acc2 = _dot16(u2, wx, acc2, SPLIT)

    inside = valid_y[:, None] & valid_x[None, :]
    plane = out_h * out_w
    _store_channel(out, acc0, mean0, inv_std0, pad0, oy, ox, out_h, out_w, inside)
    _store_channel(out + plane, acc1, mean1, inv_std1, pad1, oy, ox, out_h, out_w, inside)
    _store_channel(out + 2 * plane, acc2, mean2, inv_std2, pad2, oy, ox, out_h, out_w, inside)


_resize_normalize_autotuned = triton.autotune(
    configs=_autotune_configs(), key=["in_h", "in_w", "out_h", "out_w", "rh", "rw", "SPLIT"]
)(_resize_normalize_kernel)


def _axis_params(in_size: int, resized: int) -> tuple[float, float, float]:
    """torch's antialias parameters for one axis: (scale, support, 1/scale or 1)."""
    scale = in_size / resized
    if scale >= 1.0:
        return scale, scale, 1.0 / scale
    return scale, 1.0, 1.0


def preprocess_triton(
    frames,
    size: tuple[int, int],
    *,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    letterbox: bool = False,
    pad_value: float = 0.0,
    channel_order: str = "RGB",
) -> torch.Tensor:
    """Launch wrapper: validate, allocate (N, 3, *size), launch once per frame geometry."""
    first = check_inputs(frames, size, mean, std, dtype, channel_order)
    batches = [frames] if isinstance(frames, torch.Tensor) else [f.unsqueeze(0) for f in frames]
    count = sum(b.shape[0] for b in batches)
    out = torch.empty((count, 3, size[0], size[1]), dtype=dtype, device=first.device)
    inv_std = [1.0 / s for s in std]
    pad = [(pad_value / 255.0 - m) * i for m, i in zip(mean, inv_std)]
    row = 0
    for batch in batches:
        _launch(batch, out[row : row + batch.shape[0]], size, mean, inv_std, pad, letterbox, channel_order)
        row += batch.shape[0]
    return out


def _launch(batch, out, size, mean, inv_std, pad, letterbox, channel_order) -> None:
    n, in_h, in_w, _ = batch.shape
    out_h, out_w = size
    rh, rw, top, left = letterbox_geometry(in_h, in_w, size, letterbox)
    sn, sh, sw, sc = batch.stride()
    src = batch
    if channel_order == "BGR":
        # Read channel 2 first and walk backwards: the kernel always sees RGB.
        src = batch[..., 2:]
        sc = -sc
    args = (
        src, out, sn, sh, sw, sc, in_h, in_w, out_h, out_w, rh, rw, top, left,
        *_axis_params(in_h, rh), *_axis_params(in_w, rw), *mean, *inv_std, *pad,
    )
    split = out.dtype == torch.float32
    if interpreting():
        cfg = _INTERPRETER_CONFIG
        grid = (triton.cdiv(out_h, cfg["BLOCK_OY"]) * triton.cdiv(out_w, cfg["BLOCK_OX"]), n)
        _resize_normalize_kernel[grid](*args, SPLIT=split, **cfg)
        return

    def grid(meta):
        return (triton.cdiv(out_h, meta["BLOCK_OY"]) * triton.cdiv(out_w, meta["BLOCK_OX"]), n)

    _resize_normalize_autotuned[grid](*args, SPLIT=split)
