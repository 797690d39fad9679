"""Video temporal ops on consecutive frames of a stream, in one pass over the pixels.

`temporal_update(prev, cur, background, alpha=..., grid=(gh, gw))` returns

* energy (N,): mean |cur - prev| over all pixels and channels, in [0, 255] units;
* tiles (N, gh, gw): the same mean per tile; tile (i, j) holds rows [i*H//gh, (i+1)*H//gh) and
  columns [j*W//gw, (j+1)*W//gw), so every pixel belongs to exactly one tile;
* new_background (N, H, W, 3) float32: (1 - alpha) * background + alpha * cur.

CUDA tensors go to the Triton kernel, CPU tensors to `temporal_update_reference` (see
`kernels._dispatch`). The operation is pure streaming: per pixel channel it reads 1 + 1 + 4 bytes
and writes 4, so the kernel's job is to move those 10 bytes at copy bandwidth and do the sums on
the way; one launch (plus zeroing the 1 + gh*gw accumulators per frame) instead of eager torch's
half-dozen passes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._dispatch import launch, use_triton


def temporal_update(prev, cur, background, *, alpha: float, grid: tuple[int, int] = (4, 4)):
    """-> (energy (N,) float32, tiles (N, gh, gw) float32, new_background (N, H, W, 3) float32)."""
    # The implementation checks the inputs, once; bad input gets the same error from either.
    run = temporal_update_triton if use_triton(cur) else temporal_update_reference
    return run(prev, cur, background, alpha=alpha, grid=grid)


def temporal_update_reference(prev, cur, background, *, alpha: float, grid: tuple[int, int] = (4, 4)):
    """Plain torch, one tile at a time."""
    _check(prev, cur, background, alpha, grid)
    gh, gw = grid
    _, height, width, _ = cur.shape
    diff = (cur.to(torch.int16) - prev.to(torch.int16)).abs().to(torch.float32)
    energy = diff.mean(dim=(1, 2, 3))
    rows = [i * height // gh for i in range(gh + 1)]
    cols = [j * width // gw for j in range(gw + 1)]
    tiles = torch.stack(
        [
            torch.stack(
                [diff[:, rows[i] : rows[i + 1], cols[j] : cols[j + 1]].mean(dim=(1, 2, 3)) for j in range(gw)],
                dim=1,
            )
            for i in range(gh)
        ],
        dim=1,
    )
    new_background = (1.0 - alpha) * background + alpha * cur.to(torch.float32)
    return energy, tiles, new_background


def _check(prev, cur, background, alpha, grid) -> None:
    for name, t in (("prev", prev), ("cur", cur), ("background", background)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4 or t.shape[-1] != 3:
            raise ValueError(f"{name} must be (N, H, W, 3) with 3 channels, got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    for name, t in (("prev", prev), ("cur", cur)):
        if t.dtype != torch.uint8:
            raise ValueError(f"{name} must be uint8, got {t.dtype}")
    if background.dtype != torch.float32:
        raise ValueError(f"background must be float32, got {background.dtype}")
    if not prev.shape == cur.shape == background.shape:
        raise ValueError(
            f"prev, cur and background must have one shape, got {tuple(prev.shape)}, "
            f"{tuple(cur.shape)} and {tuple(background.shape)}"
        )
    if len({prev.device, cur.device, background.device}) != 1:
        raise ValueError("prev, cur and background must be on one device")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    height, width = cur.shape[1], cur.shape[2]
    if (
        len(grid) != 2
        or any(isinstance(g, bool) or not isinstance(g, int) for g in grid)
        or not (1 <= grid[0] <= height and 1 <= grid[1] <= width)
    ):
        raise ValueError(f"grid must be (gh, gw) with 1 <= gh <= H={height}, 1 <= gw <= W={width}, got {grid!r}")


def _autotune_configs() -> list[triton.Config]:
    return [
        # 16-byte fp32 vectors across a 4-warp program, 8 rows per program: many programs in flight.
        triton.Config(dict(BLOCK_R=8, BLOCK_F=512), num_warps=4),
        # Longer runs along the row: fewer column-tile boundaries (segmented sums) per element.
        triton.Config(dict(BLOCK_R=4, BLOCK_F=2048), num_warps=8),
        # Taller blocks: more independent loads in flight per thread.
        triton.Config(dict(BLOCK_R=16, BLOCK_F=512), num_warps=8),
        triton.Config(dict(BLOCK_R=8, BLOCK_F=1024), num_warps=8),
        # Whole 1080p rows (5760 values) in two chunks: fewer partly masked tail chunks.
        triton.Config(dict(BLOCK_R=2, BLOCK_F=4096), num_warps=8),
        triton.Config(dict(BLOCK_R=4, BLOCK_F=4096), num_warps=16),
        # No software pipelining: the loop is pure streaming, and without the prefetch buffers
        # each program needs far fewer registers, so more programs (and loads) fit per SM.
        triton.Config(dict(BLOCK_R=4, BLOCK_F=2048), num_warps=8, num_stages=1),
        triton.Config(dict(BLOCK_R=8, BLOCK_F=1024), num_warps=4, num_stages=1),
    ]


@triton.jit
def _temporal_kernel(
    prev, cur, bg, new_bg, sums,
    sp_n, sp_h, sp_w, sp_c, sc_n, sc_h, sc_w, sc_c, sb_n, sb_h, sb_w, sb_c,
    height, width, gh, gw, rows_per_band, alpha,
    PACKED: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
):
    band = tl.program_id(0)
    tile_row = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    # This program's rows: one band of one tile row, so its sums go to tile row `tile_row` only.
    r0 = tile_row * height // gh
    r1 = (tile_row + 1) * height // gh
    band_start = r0 + band * rows_per_band
    band_end = tl.minimum(band_start + rows_per_band, r1)
    row_len = width * 3
    prev += n * sp_n
    cur += n * sc_n
    bg += n * sb_n
    new_bg += n * height * row_len
    # `sums` holds all frames' tiles (row-major), then all frames' energies, so both outputs are
    # contiguous views of one zeroed buffer; both are accumulated with atomics.
    tile_out = sums + n * gh * gw + tile_row * gw
    energy_out = sums + tl.num_programs(2) * gh * gw + n
    total = 0.0
    for f0 in range(0, row_len, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        x = f // 3
        # Column tile of each element: the largest j with j*W//gw <= x.
        tile_col = ((x + 1) * gw - 1) // width
        acc = tl.zeros([BLOCK_R, BLOCK_F], dtype=tl.float32)
        for y0 in range(band_start, band_end, BLOCK_R):
            y = (y0 + tl.arange(0, BLOCK_R))[:, None]
            mask = (y < band_end) & (f[None, :] < row_len)
            if PACKED:
                off_p = y * sp_h + f[None, :]
                off_c = y * sc_h + f[None, :]
                off_b = y * sb_h + f[None, :]
            else:
                ch = (f - x * 3)[None, :]
                off_p = y * sp_h + x[None, :] * sp_w + ch * sp_c
                off_c = y * sc_h + x[None, :] * sc_w + ch * sc_c
                off_b = y * sb_h + x[None, :] * sb_w + ch * sb_c
            # Every byte is touched once: stream it past the L2 instead of keeping it there.
            p = tl.load(prev + off_p, mask=mask, other=0, eviction_policy="evict_first").to(tl.float32)
            c = tl.load(cur + off_c, mask=mask, other=0, eviction_policy="evict_first").to(tl.float32)
            b = tl.load(bg + off_b, mask=mask, other=0.0, eviction_policy="evict_first")
            acc += tl.abs(c - p)
            tl.store(
                new_bg + y * row_len + f[None, :], (1.0 - alpha) * b + alpha * c, mask=mask,
                cache_modifier=".cs",
            )
        # Sums of |diff| are integers below 2**24 per block, so exact in float32 up to here.
        col_sums = tl.sum(acc, axis=0)
        j_first = tl.min(tl.where(f < row_len, tile_col, gw), axis=0)
        j_last = tl.max(tl.where(f < row_len, tile_col, 0), axis=0)
        for j in range(j_first, j_last + 1):
            s = tl.sum(tl.where(tile_col == j, col_sums, 0.0), axis=0)
            count = (r1 - r0) * ((j + 1) * width // gw - j * width // gw) * 3
            tl.atomic_add(tile_out + j, s / count.to(tl.float32))
            total += s
    tl.atomic_add(energy_out, total / (height * row_len).to(tl.float32))


_temporal_autotuned = triton.autotune(
    configs=_autotune_configs(), key=["height", "width", "gh", "gw", "PACKED"],
    reset_to_zero=["sums"],
)(_temporal_kernel)

_ROWS_PER_BAND = 32  # rows one program sweeps: 32 x 1080p rows is ~1.8 MB of traffic per program


def temporal_update_triton(prev, cur, background, *, alpha: float, grid: tuple[int, int] = (4, 4)):
    """Launch wrapper: validate, allocate (outputs zeroed for the atomics), launch once."""
    _check(prev, cur, background, alpha, grid)
    n, height, width, _ = cur.shape
    gh, gw = grid
    sums = torch.zeros(n * gh * gw + n, dtype=torch.float32, device=cur.device)
    tiles, energy = sums[: n * gh * gw].view(n, gh, gw), sums[n * gh * gw :]
    new_background = torch.empty((n, height, width, 3), dtype=torch.float32, device=cur.device)
    # Rows read as one contiguous run of W*3 values lets the loads vectorize.
    packed = all(t.stride(2) == 3 and t.stride(3) == 1 for t in (prev, cur, background))
    tile_h = triton.cdiv(height, gh)
    rows_per_band = min(_ROWS_PER_BAND, tile_h)
    launch_grid = (triton.cdiv(tile_h, rows_per_band), gh, n)
    args = (
        prev, cur, background, new_background, sums,
        *prev.stride(), *cur.stride(), *background.stride(),
        height, width, gh, gw, rows_per_band, float(alpha),
    )
    launch(
        _temporal_autotuned, _autotune_configs(), lambda meta: launch_grid, args,
        dict(PACKED=packed), dict(BLOCK_R=4, BLOCK_F=64),
    )
    return energy, tiles, new_background
