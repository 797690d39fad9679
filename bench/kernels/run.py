"""Benchmark the Triton kernels against torch eager, torch.compile of the same reference, and the
device's measured copy bandwidth, on the shapes of issues 4 and 17 (yuv). Needs a CUDA GPU.

    PYTHONPATH=. python3 bench/kernels/run.py [--json results.json] [--quick] [--only yuv ...]

Every variant is timed two ways, both with triton.testing.do_bench medians (L2 flushed between
calls): "call" runs the Python function as a caller would (launch overhead included); "gpu" replays
a CUDA graph of the same call, so only device time counts (blank where the variant cannot be
captured). Ratios use "gpu" where both sides have it. The last lines are a markdown table for
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys

import torch
import triton
from triton.testing import do_bench

from kernels.postprocess import softmax_topk_reference, softmax_topk_triton
from kernels.preprocess import _resize_normalize_autotuned, preprocess_reference, preprocess_triton
from kernels.temporal import _temporal_autotuned, temporal_update_reference, temporal_update_triton
from kernels.yuv import _yuv_autotuned, nv12_to_tensor_reference, nv12_to_tensor_triton, split_nv12

GB = 1e9


def time_call(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def time_graph(fn) -> float | None:
    """Median ms of replaying a CUDA graph of `fn`; None when `fn` cannot be captured."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        torch.cuda.synchronize()
    except Exception:  # noqa: BLE001 - any capture failure just means "no graph time"
        torch.cuda.synchronize()
        return None
    return do_bench(graph.replay, warmup=25, rep=100, return_mode="median")


def measure(fn) -> dict:
    try:
        fn()  # autotune / compile outside the timing
    except Exception as exc:  # noqa: BLE001 - a failed baseline is reported, not fatal
        print(f"  failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        return {"call_ms": None, "gpu_ms": None}
    torch.cuda.synchronize()
    return {"call_ms": time_call(fn), "gpu_ms": time_graph(fn)}


def best(m: dict) -> float:
    ms = m["gpu_ms"] if m["gpu_ms"] is not None else m["call_ms"]
    return float("nan") if ms is None else ms


def copy_bandwidth() -> float:
    """Device-to-device copy of 1 GiB, counting bytes read plus bytes written, in GB/s."""
    src = torch.randint(0, 255, (1 << 30,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return 2 * src.numel() / (ms * 1e-3) / GB


def compiled(fn):
    return torch.compile(fn, dynamic=False)


def bench_preprocess(rows, n, h, w, size, letterbox, quick):
    frames = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, device="cuda")
    kw = dict(dtype=torch.float16, letterbox=letterbox, pad_value=114.0)
    ref_c = compiled(preprocess_reference)
    out = preprocess_triton(frames, size, **kw)
    err = (out.float() - preprocess_reference(frames, size, **kw).float()).abs().max().item()
    moved = frames.numel() + out.numel() * out.element_size()
    name = f"preprocess {n}x{h}x{w}->{size[0]}x{size[1]}" + (" letterbox" if letterbox else "") + " fp16"
    results = {
        "triton": measure(lambda: preprocess_triton(frames, size, **kw)),
        "eager": measure(lambda: preprocess_reference(frames, size, **kw)),
        "compile": measure(lambda: ref_c(frames, size, **kw)),
    }
    rows.append(_row(name, moved, results, err, str(_resize_normalize_autotuned.best_config)))


def yuv_name(n, h, w, size, letterbox, dtype) -> str:
    bits = "fp16" if dtype == torch.float16 else "fp32"
    return f"nv12 {n}x{h}x{w}->{size[0]}x{size[1]}" + (" letterbox" if letterbox else "") + f" {bits}"


def bench_yuv(rows, n, h, w, size, letterbox, dtype, quick):
    """NV12 surfaces as NVDEC gives them (one (H*3/2, W) buffer per frame) -> NCHW RGB."""
    frames = torch.randint(0, 256, (n, h * 3 // 2, w), dtype=torch.uint8, device="cuda")
    y, uv = split_nv12(frames)
    kw = dict(standard="bt709", dtype=dtype, letterbox=letterbox, pad_value=114.0)
    ref_c = compiled(nv12_to_tensor_reference)
    out = nv12_to_tensor_triton(y, uv, size, **kw)
    err = (out.float() - nv12_to_tensor_reference(y, uv, size, **kw).float()).abs().max().item()
    moved = frames.numel() + out.numel() * out.element_size()
    name = yuv_name(n, h, w, size, letterbox, dtype)
    results = {
        "triton": measure(lambda: nv12_to_tensor_triton(y, uv, size, **kw)),
        "eager": measure(lambda: nv12_to_tensor_reference(y, uv, size, **kw)),
        "compile": measure(lambda: ref_c(y, uv, size, **kw)),
    }
    rows.append(_row(name, moved, results, err, str(_yuv_autotuned.best_config)))


def bench_softmax_topk(rows, n, c, k, quick):
    logits = torch.randn((n, c), dtype=torch.float32, device="cuda")
    ref_c = compiled(softmax_topk_reference)
    p, i = softmax_topk_triton(logits, k)
    rp, ri = softmax_topk_reference(logits, k)
    err = max((p - rp).abs().max().item(), float((i != ri).any().item()))
    moved = logits.numel() * logits.element_size() + n * k * (4 + 8)
    results = {
        "triton": measure(lambda: softmax_topk_triton(logits, k)),
        "eager": measure(lambda: softmax_topk_reference(logits, k)),
        "compile": measure(lambda: ref_c(logits, k)),
    }
    from kernels.postprocess import _softmax_topk_autotuned

    rows.append(_row(f"softmax+top{k} {n}x{c} fp32", moved, results, err, str(_softmax_topk_autotuned.best_config)))


def bench_temporal(rows, n, h, w, grid, quick):
    prev = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, device="cuda")
    cur = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, device="cuda")
    background = torch.rand((n, h, w, 3), device="cuda") * 255
    ref_c = compiled(temporal_update_reference)
    got = temporal_update_triton(prev, cur, background, alpha=0.05, grid=grid)
    want = temporal_update_reference(prev, cur, background, alpha=0.05, grid=grid)
    err = max((a - b).abs().max().item() for a, b in zip(got, want))
    moved = cur.numel() * (1 + 1 + 4 + 4)
    results = {
        "triton": measure(lambda: temporal_update_triton(prev, cur, background, alpha=0.05, grid=grid)),
        "eager": measure(lambda: temporal_update_reference(prev, cur, background, alpha=0.05, grid=grid)),
        "compile": measure(lambda: ref_c(prev, cur, background, alpha=0.05, grid=grid)),
    }
    rows.append(_row(f"temporal {n}x{h}x{w} grid {grid[0]}x{grid[1]}", moved, results, err, str(_temporal_autotuned.best_config)))


def compiled_stats(jit_fn) -> list[str]:
    """Registers, spills and shared memory of each compiled variant of a @triton.jit kernel."""
    stats = []
    try:
        for cache in jit_fn.device_caches.values():
            for kernel in cache[0].values():
                stats.append(f"regs={kernel.n_regs} spills={kernel.n_spills} shared={kernel.metadata.shared}")
    except Exception as exc:  # noqa: BLE001 - the compiler report is a nice-to-have
        stats.append(f"unavailable: {exc}")
    return stats


def _guarded(bench, *args) -> None:
    """Run one benchmark; a failure is printed and the other operations still run."""
    try:
        bench(*args)
    except Exception as exc:  # noqa: BLE001
        print(f"{bench.__name__}{args[1:]} failed: {type(exc).__name__}: {str(exc)[:500]}", flush=True)


def _row(name, moved, results, err, config):
    return {"name": name, "bytes": moved, "max_abs_err": err, "config": config, **results}


def _fmt(ms):
    return "-" if ms is None else f"{ms:.3f}"


def table(rows, copy_gbs) -> list[str]:
    lines = [
        "| operation | bytes moved | Triton call / gpu ms | eager call / gpu ms | compile call / gpu ms "
        "| vs eager | vs compile | Triton GB/s | % of copy | max abs err |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        t, e, c = r["triton"], r["eager"], r["compile"]
        gbs = r["bytes"] / (best(t) * 1e-3) / GB
        lines.append(
            f"| {r['name']} | {r['bytes'] / 1e6:.1f} MB "
            f"| {_fmt(t['call_ms'])} / {_fmt(t['gpu_ms'])} | {_fmt(e['call_ms'])} / {_fmt(e['gpu_ms'])} "
            f"| {_fmt(c['call_ms'])} / {_fmt(c['gpu_ms'])} | {best(e) / best(t):.2f}x | {best(c) / best(t):.2f}x "
            f"| {gbs:,.0f} | {100 * gbs / copy_gbs:.0f}% | {r['max_abs_err']:.2g} |"
        )
    return lines


def cases() -> dict:
    """operation -> (benchmark, its shapes); --quick runs each operation's first shape only."""
    return {
        "preprocess": (bench_preprocess, [
            (64, 1080, 1920, (224, 224), False), (256, 480, 640, (224, 224), False),
            (16, 2160, 3840, (640, 640), True),
        ]),
        "postprocess": (bench_softmax_topk, [(4096, 1000, 5), (4096, 1000, 16), (256, 21843, 5), (256, 21843, 16)]),
        "temporal": (bench_temporal, [(32, 1080, 1920, (4, 4))]),
        # Equal bytes per batch (~50 MB of NV12): 16 1080p frames or 4 4K frames, to a classifier's
        # 224x224 and a detector's 640x640 letterbox.
        "yuv": (bench_yuv, [
            (n, h, w, size, letterbox, dtype)
            for n, h, w in ((16, 1080, 1920), (4, 2160, 3840))
            for size, letterbox in (((224, 224), False), ((640, 640), True))
            for dtype in (torch.float16, torch.float32)
        ]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--quick", action="store_true", help="one shape per operation (a smoke run)")
    parser.add_argument("--only", choices=list(cases()), action="append", help="repeatable; default: all")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    only = set(args.only or cases())
    copy_gbs = copy_bandwidth()
    print(f"device copy bandwidth: {copy_gbs:,.0f} GB/s (read + write)", flush=True)
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "copy_gb_s": copy_gbs, "command": " ".join(["python3", "bench/kernels/run.py", *(argv or sys.argv[1:])]),
    }
    rows: list[dict] = []
    for operation, (bench, shapes) in cases().items():
        if operation not in only:
            continue
        for shape in shapes[:1] if args.quick else shapes:
            _guarded(bench, rows, *shape, args.quick)
            print(table(rows, copy_gbs)[-1] if rows else "", flush=True)
            if args.json:
                # Saved after every row, so a run cut short by a time limit keeps what it measured.
                _save(args.json, meta, rows)
    print(json.dumps(meta))
    print("\n".join(table(rows, copy_gbs)))
    for r in rows:
        print(f"{r['name']}: best config {r['config']}")
    from kernels.postprocess import _softmax_topk_kernel
    from kernels.preprocess import _resize_normalize_kernel
    from kernels.temporal import _temporal_kernel
    from kernels.yuv import _yuv_kernel

    for fn in (_resize_normalize_kernel, _softmax_topk_kernel, _temporal_kernel, _yuv_kernel):
        print(fn.__name__, "; ".join(compiled_stats(fn)))
    return 0


def _save(path: str, meta: dict, rows: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
