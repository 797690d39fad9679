"""Time a grid of tile configs of the NV12 kernel on run.py's yuv shapes, one config at a time.

    PYTHONPATH=. python3 bench/kernels/sweep.py [--json sweep.json] [--top 5]

The autotuner picks the fastest of `kernels._resample.tile_configs()` for each shape; this sweep
times a wider grid (tile sizes, chunk widths, warps, pipeline stages) so that list can be chosen
from measurements. Each figure is the median of CUDA-graph replays (run.py's "gpu" column); a
config that fails to compile or launch (too much shared memory, say) is reported as such.
Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch
import triton

from bench.kernels.run import cases, time_graph, yuv_name
from kernels.yuv import Conversion, _yuv_kernel, kernel_call, split_nv12


# (BLOCK_OY, BLOCK_OX, warps): from 16x16 to 2,048 slots of output a tile (4 slots a column).
TILES = ((16, 16, 4), (16, 32, 4), (32, 16, 4), (32, 32, 4), (32, 32, 8), (16, 64, 4), (64, 16, 8), (32, 64, 8))


def grid_configs() -> list[triton.Config]:
    """Every tile with 64- and 128-byte chunks, unpipelined (1 stage) and pipelined (3)."""
    return [
        triton.Config(dict(BLOCK_OY=oy, BLOCK_OX=ox, CHUNK_Y=32, CHUNK_F=chunk_f), num_warps=warps, num_stages=stages)
        for (oy, ox, warps), chunk_f, stages in itertools.product(TILES, (64, 128), (1, 3))
    ]


def describe(config: triton.Config) -> str:
    k = config.kwargs
    return (f"{k['BLOCK_OY']}x{k['BLOCK_OX']} y{k['CHUNK_Y']} f{k['CHUNK_F']} "
            f"w{config.num_warps} s{config.num_stages}")


def time_config(config: triton.Config, y, uv, conversion: Conversion) -> float | None:
    out, args, flags, grid = kernel_call(y, (uv,), conversion)

    def run():
        _yuv_kernel[grid(config.kwargs)](*args, **flags, **config.kwargs,
                                         num_warps=config.num_warps, num_stages=config.num_stages)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - an impossible config is a row, not the end of the sweep
        print(f"  {describe(config)}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
        return None
    return time_graph(run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--top", type=int, default=5, help="configs printed per shape")
    parser.add_argument("--shapes", default="1080", help="only the shapes whose name has this (default: 1080p)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    configs = grid_configs()
    results = []
    for n, h, w, size, letterbox, dtype in cases()["yuv"][1]:
        name = yuv_name(n, h, w, size, letterbox, dtype)
        if args.shapes not in name:
            continue
        frames = torch.randint(0, 256, (n, h * 3 // 2, w), dtype=torch.uint8, device="cuda")
        y, uv = split_nv12(frames)
        conversion = Conversion(size, letterbox=letterbox, pad_value=114.0, dtype=dtype)
        times = {describe(c): time_config(c, y, uv, conversion) for c in configs}
        ranked = sorted((t, c) for c, t in times.items() if t is not None)
        print(name, "; ".join(f"{c} {t:.3f} ms" for t, c in ranked[: args.top]), flush=True)
        results.append({"name": name, "ms": times})
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"gpu": torch.cuda.get_device_name(), "triton": triton.__version__,
                           "rows": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
