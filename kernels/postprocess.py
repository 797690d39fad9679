"""Postprocessing: fused softmax + top-k over classifier logits.

`softmax_topk(logits, k)` returns the k largest class probabilities of each row (descending) and
their class indices. CUDA logits go to the Triton kernel, CPU logits to `softmax_topk_reference`
(see `kernels._dispatch` for the override).

Softmax is monotonic, so the top-k of the probabilities are the top-k of the logits: the kernel
reads each row once, keeps an online max and sum of exponentials (as in flash attention) and a
running top-k list, and only turns the k winners into probabilities at the end. Memory traffic is
the logits read once plus N*k outputs; eager torch reads the logits, writes and re-reads the full
probability matrix, then sorts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._dispatch import launch, use_triton

MAX_K = 16
# The interpreter runs one fixed configuration; 256 still spreads a 1000-class row over chunks.
_INTERPRETER_CONFIG = dict(BLOCK=256)
LOGIT_DTYPES = (torch.float16, torch.float32)


def softmax_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float16/32 logits -> (probs (N, k) float32, indices (N, k) int64), largest first."""
    # The implementation checks the inputs, once; bad input gets the same error from either.
    run = softmax_topk_triton if use_triton(logits) else softmax_topk_reference
    return run(logits, k)


def softmax_topk_reference(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch: softmax in float32, then topk."""
    _check(logits, k)
    probs = torch.softmax(logits.to(torch.float32), dim=-1)
    values, indices = torch.topk(probs, k, dim=-1)
    return values, indices


def _check(logits: torch.Tensor, k: int) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in LOGIT_DTYPES:
        raise ValueError(f"logits must be float16 or float32, got {logits.dtype}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must not be empty, got shape {tuple(logits.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(MAX_K, logits.shape[1]):
        raise ValueError(
            f"k must be an integer in [1, min({MAX_K}, C={logits.shape[1]})], got {k!r}"
        )


def _autotune_configs() -> list[triton.Config]:
    return [
        # One chunk covers a 1000-class row: a single pass, no merging across chunks.
        triton.Config(dict(BLOCK=1024), num_warps=4),
        # Few rows with many classes (21843): bigger chunks, more warps per row to hide latency.
        triton.Config(dict(BLOCK=4096), num_warps=8),
        triton.Config(dict(BLOCK=8192), num_warps=16),
        # Small chunks: cheaper top-k extraction per chunk (each pick is a reduction over BLOCK).
        triton.Config(dict(BLOCK=512), num_warps=4),
    ]


@triton.jit
def _softmax_topk_kernel(
    logits, probs, indices, n_cols, stride_row,
    K: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    logits += row * stride_row
    slot = tl.arange(0, K_PAD)
    lane = tl.arange(0, BLOCK)
    top_v = tl.full([K_PAD], float("-inf"), tl.float32)
    top_i = tl.zeros([K_PAD], dtype=tl.int32)
    run_max = tl.max(top_v, axis=0)  # -inf, as a scalar tensor
    run_sum = tl.sum(tl.zeros([K_PAD], dtype=tl.float32), axis=0)
    for start in range(0, n_cols, BLOCK):
        cols = start + lane
        x = tl.load(logits + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(run_max, tl.max(x, axis=0))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
        run_max = new_max
        # Merge this chunk into the running list: K picks of the larger head of the two.
        new_v = tl.full([K_PAD], float("-inf"), tl.float32)
        new_i = tl.zeros([K_PAD], dtype=tl.int32)
        for j in tl.static_range(K):
            chunk_v, chunk_pos = tl.max(x, axis=0, return_indices=True)
            list_v, list_pos = tl.max(top_v, axis=0, return_indices=True)
            list_i = tl.sum(tl.where(slot == list_pos, top_i, 0), axis=0)
            # Ties go to the running list: it holds earlier (lower) class indices.
            take_chunk = chunk_v > list_v
            new_v = tl.where(slot == j, tl.where(take_chunk, chunk_v, list_v), new_v)
            new_i = tl.where(slot == j, tl.where(take_chunk, start + chunk_pos, list_i), new_i)
            # Remove the pick from its source (-1 matches no position).
            x = tl.where(lane == tl.where(take_chunk, chunk_pos, -1), float("-inf"), x)
            top_v = tl.where(slot == tl.where(take_chunk, -1, list_pos), float("-inf"), top_v)
        top_v = new_v
        top_i = new_i
    p = tl.exp(top_v - run_max) / run_sum
    keep = slot < K
    tl.store(probs + row * K + slot, p, mask=keep)
    tl.store(indices + row * K + slot, top_i.to(tl.int64), mask=keep)


_softmax_topk_autotuned = triton.autotune(configs=_autotune_configs(), key=["n_cols", "K"])(
    _softmax_topk_kernel
)


def softmax_topk_triton(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch wrapper: validate, allocate the (N, k) outputs, one program per row."""
    _check(logits, k)
    if logits.stride(1) != 1:
        logits = logits.contiguous()  # rows are read as contiguous runs
    n_rows, n_cols = logits.shape
    probs = torch.empty((n_rows, k), dtype=torch.float32, device=logits.device)
    indices = torch.empty((n_rows, k), dtype=torch.int64, device=logits.device)
    args = (logits, probs, indices, n_cols, logits.stride(0))
    k_pad = max(16, triton.next_power_of_2(k))
    launch(
        _softmax_topk_autotuned, _autotune_configs(), lambda meta: (n_rows,), args,
        dict(K=k, K_PAD=k_pad), _INTERPRETER_CONFIG,
    )
    return probs, indices
