"""`kernels.postprocess.softmax_topk`: the Triton kernel against torch.softmax + torch.topk.

Logits are distinct (a random permutation of a range), so the top-k order is unambiguous.
Tolerance: probabilities atol 1e-6, rtol 1e-5 (float32 exp and sum in another order); indices exact.
"""

import pytest
import torch

from kernels.postprocess import softmax_topk, softmax_topk_reference
from tests.kernels.placement import on_device


def distinct_logits(n, c, dtype, spread=20.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Float16 has 11 significant bits: keep n*c values apart by at least one float16 step.
    values = torch.randperm(n * c, generator=g).reshape(n, c).to(torch.float64)
    return (values / (n * c) * spread - spread / 2).to(dtype)


def assert_matches_reference(logits, k, device):
    expected_p, expected_i = softmax_topk_reference(logits, k)
    p, i = softmax_topk(logits.to(device), k)
    assert p.dtype == torch.float32 and i.dtype == torch.int64
    assert p.shape == i.shape == (logits.shape[0], k)
    assert torch.equal(i.cpu(), expected_i)
    torch.testing.assert_close(p.cpu(), expected_p, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "n, c, k, dtype",
    [
        (3, 10, 5, torch.float32),  # one partial chunk
        (2, 1000, 16, torch.float16),  # several chunks (256 under the interpreter): the merge path
        (1, 1, 1, torch.float32),  # one class
        (4, 300, 7, torch.float32),  # k not a power of two, last chunk partial
        (5, 17, 16, torch.float16),  # k close to C
    ],
)
def test_matches_reference(device, n, c, k, dtype):
    assert_matches_reference(distinct_logits(n, c, dtype), k, device)


def test_large_logits_do_not_overflow(device):
    # exp(1000) overflows float32: the running max must be subtracted first.
    assert_matches_reference(distinct_logits(2, 600, torch.float32, spread=2000.0), 5, device)


def test_strided_logits(device):
    wide = distinct_logits(4, 700, torch.float32)
    assert_matches_reference(wide[:, ::2], 5, device)  # column stride 2
    assert_matches_reference(distinct_logits(300, 3, torch.float32).t(), 3, device)  # transposed


def test_probabilities_sum_to_one_when_k_is_c(device):
    p, i = softmax_topk(distinct_logits(3, 12, torch.float32).to(device), 12)
    torch.testing.assert_close(p.sum(dim=1).cpu(), torch.ones(3), atol=1e-6, rtol=0)
    assert sorted(i[0].tolist()) == list(range(12))


@pytest.mark.parametrize(
    "logits, k, message",
    [
        (torch.zeros(2, 10, dtype=torch.int32), 3, "float16 or float32"),
        (torch.zeros(10), 3, r"\(N, C\)"),
        (torch.zeros(0, 10), 3, "empty"),
        (torch.zeros(2, 10), 0, "k must be"),
        (torch.zeros(2, 40), 17, "k must be"),
        (torch.zeros(2, 4), 5, "k must be"),
    ],
)
def test_bad_input_is_a_value_error(logits, k, message, device):
    logits = on_device(device, logits)
    with pytest.raises(ValueError, match=message):
        softmax_topk(logits, k)
    with pytest.raises(ValueError, match=message):
        softmax_topk_reference(logits, k)
