"""The Triton-language kernel behind `kernels.preprocess.preprocess` for CUDA frames.

One program computes a BLOCK_OY x BLOCK_OX tile of the output, all three channels, in one pass over
the input window that tile needs. The antialiased bilinear resize is separable:

    out_tile = (Wy @ X) @ W3

with Wy (BLOCK_OY x rows) the band matrix of torch's antialias weights (a triangle filter of
half-width `scale` when downscaling, plain bilinear when upscaling, each row normalized to sum 1),
X the input rows taken as raw bytes (R, G, B interleaved), and W3 (bytes x 4*BLOCK_OX) the
horizontal band matrix spread over the interleaved channels: column c*BLOCK_OX + ox holds the
weights of output column ox on the bytes of channel c (slot c = 3 is unused). Reading X as bytes
keeps every load a 16-byte vector over a contiguous run of the row, and both products run on the
tensor cores (`tl.dot`), chunk by chunk, so registers stay bounded whatever the scale factor.

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

from kernels._dispatch import launch
from kernels.preprocess import IMAGENET_MEAN, IMAGENET_STD, check_inputs, letterbox_geometry

# The interpreter runs one fixed configuration (autotuning would time every config through NumPy).
_INTERPRETER_CONFIG = dict(BLOCK_OY=16, BLOCK_OX=16, CHUNK_Y=16, CHUNK_F=64)


def _autotune_configs() -> list[triton.Config]:
    return [
        # 32x32 output tiles: the halo shared with neighbouring tiles is small next to the tile
        # for the strong downscales (1080p, 4K); W3 is 128x128, so 8 warps keep it in registers.
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=32, CHUNK_Y=32, CHUNK_F=128), num_warps=8),
        # Narrower tiles: W3 halves (128x64) and 4 warps suffice, so more programs fit per SM.
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=16, CHUNK_Y=32, CHUNK_F=128), num_warps=4),
        # Taller tiles: the vertical halo (2 * scale rows) is the larger one when scale_y is big.
        triton.Config(dict(BLOCK_OY=64, BLOCK_OX=16, CHUNK_Y=32, CHUNK_F=128), num_warps=8),
        # 16-row tiles: the vertical dot multiplies BLOCK_OY outputs by every row of the tile's
        # span, most of them outside each output's window, so fewer rows waste fewer FLOPs.
        triton.Config(dict(BLOCK_OY=16, BLOCK_OX=32, CHUNK_Y=32, CHUNK_F=128), num_warps=4),
        triton.Config(dict(BLOCK_OY=16, BLOCK_OX=16, CHUNK_Y=32, CHUNK_F=128), num_warps=4),
        # Small tiles: many programs, so even a few small frames fill 132 SMs; right for upscaling.
        triton.Config(dict(BLOCK_OY=16, BLOCK_OX=16, CHUNK_Y=16, CHUNK_F=64), num_warps=4),
    ]


@triton.jit
def _window(r, valid, scale, support, invscale, in_size):
    """torch's antialias window for resized coordinates r.

    Returns the filter centre shifted by -0.5 (so a tap's weight is 1 - |pos - centre| * invscale),
    the window [lo, hi) clamped to the image, and 1 / (sum of the window's weights), 0 for padding.
    """
    center = scale * (r.to(tl.float32) + 0.5)
    lo = tl.maximum(tl.floor(center - support + 0.5).to(tl.int32), 0)
    hi = tl.minimum(tl.floor(center + support + 0.5).to(tl.int32), in_size)
    hi = tl.where(valid, hi, lo)
    center -= 0.5
    total = tl.zeros_like(center)
    # A window holds at most 2 * support + 1 taps: sum them one tap at a time, as torch does.
    for t in range(0, tl.max(hi - lo, axis=0)):
        pos = lo + t
        w = tl.maximum(1.0 - tl.abs(pos.to(tl.float32) - center) * invscale, 0.0)
        total += tl.where(pos < hi, w, 0.0)
    inv_total = tl.where(valid & (total > 0), 1.0 / tl.where(total > 0, total, 1.0), 0.0)
    return center, lo, hi, inv_total


@triton.jit
def _triangle(pos, center, invscale, inv_total):
    """Normalized weight of an input position, in torch's order of operations.

    Outside a window the triangle is already <= 0, and input beyond the image edge is loaded as
    zeros, so no window mask is needed here.
    """
    return tl.maximum(1.0 - tl.abs(pos - center) * invscale, 0.0) * inv_total


@triton.jit
def _bytes_to_half(x):
    """uint8 -> float16, exactly, without the quarter-rate integer-to-float conversion.

    0x6400 is 1024.0 in float16, whose ulp is 1: OR-ing a byte into its mantissa gives 1024 + x,
    and subtracting 1024 leaves x. uint8 is exact in float16, so the pixel operand never needs a
    low part.
    """
    biased = (x.to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)
    return (biased - 1024.0).to(tl.float16)


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
def _per_channel(c, v0, v1, v2):
    return tl.where(c == 0, v0, tl.where(c == 1, v1, v2))


@triton.jit
def _resize_normalize_kernel(
    src, out,
    stride_n, stride_h, row_bytes,
    in_h, in_w, out_h, out_w,
    rh, rw, top, left,
    scale_y, support_y, invscale_y, scale_x, support_x, invscale_x,
    mean0, mean1, mean2, inv_std0, inv_std1, inv_std2, pad0, pad1, pad2,
    BGR: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_OY: tl.constexpr, BLOCK_OX: tl.constexpr, CHUNK_Y: tl.constexpr, CHUNK_F: tl.constexpr,
):
    tiles_x = tl.cdiv(out_w, BLOCK_OX)
    tile = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    src += n * stride_n
    out += n * 3 * out_h * out_w

    oy = (tile // tiles_x) * BLOCK_OY + tl.arange(0, BLOCK_OY)
    # Output slots: channel c = slot // BLOCK_OX (3 = unused) of output column ox.
    slot = tl.arange(0, 4 * BLOCK_OX)
    slot_c = slot // BLOCK_OX
    ox = (tile % tiles_x) * BLOCK_OX + slot % BLOCK_OX
    # Output rows/columns outside the resized region are letterbox padding: empty windows.
    valid_y = (oy >= top) & (oy < top + rh)
    valid_x = (ox >= left) & (ox < left + rw)
    cy, ylo, yhi, inv_y = _window(oy - top, valid_y, scale_y, support_y, invscale_y, in_h)
    cx, xlo, xhi, inv_x = _window(ox - left, valid_x, scale_x, support_x, invscale_x, in_w)
    inv_x = tl.where(slot_c < 3, inv_x, 0.0)
    # The input window of the whole tile (empty when the tile is all padding).
    y_start = tl.min(tl.where(valid_y, ylo, in_h), axis=0)
    y_end = tl.max(tl.where(valid_y, yhi, 0), axis=0)
    x_start = tl.min(tl.where(valid_x, xlo, in_w), axis=0)
    x_end = tl.max(tl.where(valid_x, xhi, 0), axis=0)
    # Byte columns start on a 16-byte boundary so every row segment loads as 16-byte vectors.
    f_start = tl.multiple_of((x_start * 3) // 16 * 16, 16)
    n_chunks_y = tl.cdiv(tl.maximum(y_end - y_start, 0), CHUNK_Y)
    n_chunks_f = tl.cdiv(tl.maximum(x_end * 3 - f_start, 0), CHUNK_F)

    acc = tl.zeros([BLOCK_OY, 4 * BLOCK_OX], dtype=tl.float32)
    for kf in range(0, n_chunks_f):
        f = f_start + kf * CHUNK_F + tl.arange(0, CHUNK_F)
        # Vertical pass down this column chunk: U = Wy @ X, all channels at once.
        u = tl.zeros([BLOCK_OY, CHUNK_F], dtype=tl.float32)
        for ky in range(0, n_chunks_y):
            yy = y_start + ky * CHUNK_Y + tl.arange(0, CHUNK_Y)
            wy = _triangle(yy[None, :].to(tl.float32), cy[:, None], invscale_y, inv_y[:, None])
            ptrs = src + yy[:, None].to(tl.int64) * stride_h + f[None, :]
            mask = (yy[:, None] < y_end) & (f[None, :] < row_bytes)
            x = _bytes_to_half(tl.load(ptrs, mask=mask, other=0))
            wy_hi = wy.to(tl.float16)
            u = tl.dot(wy_hi, x, u)
            if SPLIT:
                u = tl.dot((wy - wy_hi.to(tl.float32)).to(tl.float16), x, u)
        # Horizontal pass: W3 maps each byte (pixel f // 3, channel f % 3) to its channel's slots.
        pix = f // 3
        chan = f - pix * 3
        if BGR:
            chan = 2 - chan
        w3 = _triangle(pix[:, None].to(tl.float32), cx[None, :], invscale_x, inv_x[None, :])
        w3 = tl.where(chan[:, None] == slot_c[None, :], w3, 0.0)
        acc = _dot16(u, w3, acc, SPLIT)

    mean = _per_channel(slot_c, mean0, mean1, mean2)
    inv_std = _per_channel(slot_c, inv_std0, inv_std1, inv_std2)
    pad = _per_channel(slot_c, pad0, pad1, pad2)
    val = (acc * (1.0 / 255.0) - mean[None, :]) * inv_std[None, :]
    val = tl.where(valid_y[:, None] & valid_x[None, :], val, pad[None, :])
    ptrs = out + slot_c[None, :] * out_h * out_w + oy[:, None] * out_w + ox[None, :]
    mask = (oy[:, None] < out_h) & (ox[None, :] < out_w) & (slot_c[None, :] < 3)
    tl.store(ptrs, val.to(out.dtype.element_ty), mask=mask)


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
    if batch.stride(3) != 1 or batch.stride(2) != 3:
        # The kernel reads each row as one run of W*3 bytes; rows themselves may be strided.
        batch = batch.contiguous()
    args = (
        batch, out, batch.stride(0), batch.stride(1), in_w * 3, in_h, in_w, out_h, out_w,
        rh, rw, top, left, *_axis_params(in_h, rh), *_axis_params(in_w, rw), *mean, *inv_std, *pad,
    )
    flags = dict(BGR=channel_order == "BGR", SPLIT=out.dtype == torch.float32)

    def grid(meta):
        return (triton.cdiv(out_h, meta["BLOCK_OY"]) * triton.cdiv(out_w, meta["BLOCK_OX"]), n)

    launch(_resize_normalize_autotuned, _autotune_configs(), grid, args, flags, _INTERPRETER_CONFIG)
