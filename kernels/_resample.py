"""What every resize-and-normalize operation shares: its arguments, torch's antialias windows.

`kernels.preprocess` (RGB frames) and `kernels.yuv` (NV12 and I420 planes) both resize to an
output size, optionally letterboxed, normalize per RGB channel and write NCHW float16/float32.
Here are the Python side of that (argument checks, letterbox geometry, the references' final
normalize-and-pad step) and the @triton.jit pieces both kernels are built from:

`accumulate_resampled` adds to a tile of output slots the antialiased resize of one interleaved
plane, separably, as two products on the tensor cores:

    acc += (Wy @ X) @ W

with Wy (BLOCK_OY x rows) the band matrix of torch's antialias weights (a triangle filter of
half-width `scale` when downscaling, plain bilinear when upscaling, each row normalized to sum 1),
X the plane's rows read as raw bytes (CHANNELS values interleaved per pixel), and W (bytes x
4*BLOCK_OX) the horizontal band matrix spread over the output slots: slot c*BLOCK_OX + ox is
output channel c (3 = unused) of column ox, and byte f's weight there is the triangle weight of
its pixel times `mix[channel of f]` at that slot. With mix the identity the result is a plain
resize (preprocess); with mix a colour matrix's column the resize and the colour conversion are
one product (yuv), since both are linear. Reading X as bytes keeps every load a 16-byte vector
over a contiguous run of the row, and the products go chunk by chunk, so registers stay bounded
whatever the scale factor.

Precision: uint8 pixels are exact in float16. Weights and the intermediate Wy @ X are rounded to
float16 for the dots; with SPLIT (float32 output) each is split into a float16 high and low part
and the cross products are summed, which keeps float32-level accuracy (about 1e-6).

Memory traffic: every input byte is read once from DRAM (neighbouring tiles re-read their shared
halo, mostly from L2); nothing intermediate touches memory.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

# ImageNet statistics, the usual normalization for torchvision classifiers.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OUTPUT_DTYPES = (torch.float16, torch.float32)

# The interpreter runs one fixed tile (autotuning would time every config through NumPy).
INTERPRETER_TILE = dict(BLOCK_OY=16, BLOCK_OX=16, CHUNK_Y=16, CHUNK_F=64)


def check_output_args(size, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype) -> None:
    """Validate the output size, normalization and dtype every resize-and-normalize op takes."""
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 values each, got {len(mean)} and {len(std)}")
    if any(s == 0 for s in std):
        raise ValueError(f"std must not contain zeros, got {tuple(std)}")
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"dtype must be torch.float16 or torch.float32, got {dtype}")


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


def resize_reference(planes: torch.Tensor, resized: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float32 -> (N, C, *resized): torch's antialiased bilinear resize."""
    return torch.nn.functional.interpolate(
        planes, size=resized, mode="bilinear", align_corners=False, antialias=True
    )


def normalize_and_pad_reference(
    rgb: torch.Tensor, size: tuple[int, int], top: int, left: int, mean, std, pad_value: float
) -> torch.Tensor:
    """(N, 3, rh, rw) float32 RGB in [0, 255] units -> normalized (N, 3, *size), letterbox padded.

    `pad_value` is in the same [0, 255] units and goes through the same normalization, so a padded
    border looks like a frame of that colour.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
    x = (rgb / 255.0 - mean_t) / std_t
    rh, rw = x.shape[2], x.shape[3]
    if (rh, rw) == tuple(size):
        return x
    pad = (pad_value / 255.0 - mean_t) / std_t
    canvas = pad.expand(x.shape[0], 3, size[0], size[1]).clone()
    canvas[:, :, top : top + rh, left : left + rw] = x
    return canvas


def axis_params(in_size: int, resized: int) -> tuple[float, float, float]:
    """torch's antialias parameters for one axis: (scale, support, 1/scale or 1)."""
    scale = in_size / resized
    if scale >= 1.0:
        return scale, scale, 1.0 / scale
    return scale, 1.0, 1.0


def kernel_normalization(mean, std, pad_value: float) -> list[float]:
    """The kernels' normalization scalars: mean (3), 1/std (3), the normalized pad colour (3)."""
    inv_std = [1.0 / s for s in std]
    pad = [(pad_value / 255.0 - m) * i for m, i in zip(mean, inv_std)]
    return [*mean, *inv_std, *pad]


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
        total += tl.where(pos < hi, _tent(pos.to(tl.float32), center, invscale), 0.0)
    inv_total = tl.where(valid & (total > 0), 1.0 / tl.where(total > 0, total, 1.0), 0.0)
    return center, lo, hi, inv_total


@triton.jit
def _tent(pos, center, invscale):
    """The antialias filter's unnormalized weight of an input position, in torch's order of operations.

    Outside a window the triangle is already <= 0, and input beyond the image edge is loaded as
    zeros, so no window mask is needed where it is used.
    """
    return tl.maximum(1.0 - tl.abs(pos - center) * invscale, 0.0)


@triton.jit
def _triangle(pos, center, invscale, inv_total):
    """Normalized weight of an input position: the tent times its window's 1 / (sum of weights)."""
    return _tent(pos, center, invscale) * inv_total


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
def per_channel(c, v0, v1, v2):
    """v0, v1 or v2 for each element of c (0, 1, 2; anything else gets v2)."""
    return tl.where(c == 0, v0, tl.where(c == 1, v1, v2))


@triton.jit
def output_slots(tile, out_w, BLOCK_OY: tl.constexpr, BLOCK_OX: tl.constexpr):
    """A tile's output rows (BLOCK_OY) and its slots (4 * BLOCK_OX): channel and column of each."""
    tiles_x = tl.cdiv(out_w, BLOCK_OX)
    oy = (tile // tiles_x) * BLOCK_OY + tl.arange(0, BLOCK_OY)
    slot = tl.arange(0, 4 * BLOCK_OX)
    return oy, slot // BLOCK_OX, (tile % tiles_x) * BLOCK_OX + slot % BLOCK_OX


@triton.jit
def accumulate_resampled(
    acc, src, stride_h, in_h, in_w, r_y, valid_y, r_x, valid_x, slot_c,
    scale_y, support_y, invscale_y, scale_x, support_x, invscale_x, mix0, mix1, mix2,
    CHANNELS: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_OY: tl.constexpr, CHUNK_Y: tl.constexpr, CHUNK_F: tl.constexpr,
):
    """acc [BLOCK_OY, 4*BLOCK_OX] + the resize of one (in_h, in_w, CHANNELS) uint8 plane, mixed.

    r_y / r_x are the tile's rows and slot columns in resized coordinates; valid_* mark those
    inside the resized region (the rest is letterbox padding and gets no weight). mix0..2
    [4*BLOCK_OX] hold, per slot, the coefficient of the plane's channel 0, 1, 2.
    """
    cy, ylo, yhi, inv_y = _window(r_y, valid_y, scale_y, support_y, invscale_y, in_h)
    cx, xlo, xhi, inv_x = _window(r_x, valid_x, scale_x, support_x, invscale_x, in_w)
    inv_x = tl.where(slot_c < 3, inv_x, 0.0)
    # Per slot, what the window's normalization and each plane channel's mix multiply a tap by:
    # the horizontal weights are rebuilt for every chunk and are most of the kernel's arithmetic,
    # so each of their elements costs one triangle and one multiply.
    gain0 = inv_x * mix0
    gain1 = inv_x * mix1
    gain2 = inv_x * mix2
    # The input window of the whole tile (empty when the tile is all padding).
    y_start = tl.min(tl.where(valid_y, ylo, in_h), axis=0)
    y_end = tl.max(tl.where(valid_y, yhi, 0), axis=0)
    x_start = tl.min(tl.where(valid_x, xlo, in_w), axis=0)
    x_end = tl.max(tl.where(valid_x, xhi, 0), axis=0)
    row_bytes = in_w * CHANNELS
    # Byte columns start on a 16-byte boundary so every row segment loads as 16-byte vectors.
    f_start = tl.multiple_of((x_start * CHANNELS) // 16 * 16, 16)
    n_chunks_y = tl.cdiv(tl.maximum(y_end - y_start, 0), CHUNK_Y)
    n_chunks_f = tl.cdiv(tl.maximum(x_end * CHANNELS - f_start, 0), CHUNK_F)
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
        # Horizontal pass: W maps each byte (pixel f // CHANNELS, channel f % CHANNELS) to the
        # slots, weighted by its channel's mix there.
        pix = f // CHANNELS
        tri = _tent(pix[:, None].to(tl.float32), cx[None, :], invscale_x)
        if CHANNELS == 1:
            w = tri * gain0[None, :]
        elif CHANNELS == 2:
            w = tri * tl.where(((f - pix * 2) == 0)[:, None], gain0[None, :], gain1[None, :])
        else:
            chan = (f - pix * CHANNELS)[:, None]
            w = tri * tl.where(chan == 0, gain0[None, :], tl.where(chan == 1, gain1[None, :], gain2[None, :]))
        acc = _dot16(u, w, acc, SPLIT)
    return acc


@triton.jit
def normalize_and_store(
    out, rgb, oy, ox, slot_c, valid, out_h, out_w,
    mean0, mean1, mean2, inv_std0, inv_std1, inv_std2, pad0, pad1, pad2,
):
    """Write a tile of RGB slots in [0, 255] units to the (3, out_h, out_w) output, normalized;
    slots outside the resized region (`valid` false) get the normalized pad colour."""
    mean = per_channel(slot_c, mean0, mean1, mean2)
    inv_std = per_channel(slot_c, inv_std0, inv_std1, inv_std2)
    pad = per_channel(slot_c, pad0, pad1, pad2)
    val = (rgb * (1.0 / 255.0) - mean[None, :]) * inv_std[None, :]
    val = tl.where(valid, val, pad[None, :])
    ptrs = out + slot_c[None, :] * out_h * out_w + oy[:, None] * out_w + ox[None, :]
    mask = (oy[:, None] < out_h) & (ox[None, :] < out_w) & (slot_c[None, :] < 3)
    tl.store(ptrs, val.to(out.dtype.element_ty), mask=mask)


def tile_configs() -> list[triton.Config]:
    """The autotuned tiles of the resizing kernels (preprocess and yuv run the same tile loop).

    A tile's input span is about BLOCK * scale pixels per axis: ~300 luma bytes for 32 outputs
    at 1080p/4K -> 224 (also ~300 bytes of RGB or of chroma pairs at that scale). Chosen from
    `bench/kernels/sweep.py` on an H200 (docs/BENCHMARKS.md): 32x32 tiles on 4 warps beat every
    8-warp tile on the 1080p shapes (0.24 ms against 0.39 for 1080p -> 640 letterbox), although
    a thread then holds twice the accumulator.
    """
    return [
        # 32x32 output tiles, 64-byte chunks: the best on every 1080p shape of the sweep.
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=32, CHUNK_Y=32, CHUNK_F=64), num_warps=4),
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=32, CHUNK_Y=32, CHUNK_F=128), num_warps=4),
        # Narrower tiles: W halves, so more programs fit per SM; the 4K shapes' and preprocess's best.
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=16, CHUNK_Y=32, CHUNK_F=128), num_warps=4),
        triton.Config(dict(BLOCK_OY=32, BLOCK_OX=16, CHUNK_Y=32, CHUNK_F=64), num_warps=4),
        # 16-row tiles: the vertical dot multiplies BLOCK_OY outputs by every row of the tile's
        # span, most of them outside each output's window, so fewer rows waste fewer FLOPs.
        triton.Config(dict(BLOCK_OY=16, BLOCK_OX=32, CHUNK_Y=32, CHUNK_F=64), num_warps=4, num_stages=1),
        # Small tiles: many programs, so even a few small frames fill 132 SMs; right for upscaling.
        triton.Config(dict(BLOCK_OY=16, BLOCK_OX=16, CHUNK_Y=16, CHUNK_F=64), num_warps=4),
    ]


def tile_grid(out_h: int, out_w: int, n: int):
    """The launch grid of the tiled kernels: one program per output tile and frame."""

    def grid(meta):
        return (triton.cdiv(out_h, meta["BLOCK_OY"]) * triton.cdiv(out_w, meta["BLOCK_OX"]), n)

    return grid
