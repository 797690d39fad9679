"""`kernels.temporal.temporal_update`: the Triton kernel against the torch reference.

Tolerances: energy and tiles atol 1e-4, rtol 1e-5 (float32 sums in another order); new background
atol 1e-4, rtol 1e-6 (one float32 rounding of values up to 255).
"""

import pytest
import torch

from kernels.temporal import temporal_update, temporal_update_reference
from tests.kernels.placement import on_device


def stream(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    prev = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)
    cur = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)
    background = torch.rand((n, h, w, 3), generator=g) * 255
    return prev, cur, background


def assert_matches_reference(prev, cur, background, device, alpha=0.1, grid=(4, 4)):
    expected = temporal_update_reference(prev, cur, background, alpha=alpha, grid=grid)
    got = temporal_update(prev.to(device), cur.to(device), background.to(device), alpha=alpha, grid=grid)
    n, h, w, _ = cur.shape
    assert [tuple(t.shape) for t in got] == [(n,), (n, *grid), (n, h, w, 3)]
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in got)
    torch.testing.assert_close(got[0].cpu(), expected[0], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got[1].cpu(), expected[1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got[2].cpu(), expected[2], atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize(
    "n, h, w, grid",
    [
        (2, 13, 29, (3, 4)),  # tiles of unequal size; rows of 87 values span two 64-wide blocks
        (1, 1, 1, (1, 1)),  # one pixel
        (3, 40, 37, (4, 4)),  # several row bands per tile row, batch of 3
        (1, 5, 70, (5, 7)),  # one row per tile row
    ],
)
def test_matches_reference(device, n, h, w, grid):
    assert_matches_reference(*stream(n, h, w), device, grid=grid)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.37])
def test_alpha_extremes(device, alpha):
    assert_matches_reference(*stream(1, 9, 11), device, alpha=alpha, grid=(2, 2))


def test_strided_input(device):
    prev, cur, background = stream(2, 20, 40)
    rgba = torch.randint(0, 256, (2, 10, 20, 4), dtype=torch.uint8)
    # Every other row and column, and a 4-channel frame read as 3: the unpacked addressing path.
    assert_matches_reference(prev[:, ::2, ::2], cur[:, ::2, ::2], background[:, ::2, ::2], device, grid=(2, 3))
    assert_matches_reference(rgba[..., :3], cur[:, ::2, ::2], background[:, ::2, ::2], device, grid=(3, 2))


def test_identical_frames_have_zero_energy(device):
    prev, _, background = stream(2, 16, 16)
    energy, tiles, _ = temporal_update(prev.to(device), prev.to(device), background.to(device), alpha=0.5)
    assert energy.abs().max().item() == 0.0 and tiles.abs().max().item() == 0.0


def test_motion_shows_in_its_tile_only(device):
    prev = torch.zeros((1, 8, 8, 3), dtype=torch.uint8)
    cur = prev.clone()
    cur[0, 4:, :4] = 100  # bottom-left quarter moves
    _, tiles, _ = temporal_update(prev.to(device), cur.to(device), torch.zeros(1, 8, 8, 3).to(device), alpha=0.5, grid=(2, 2))
    assert tiles.cpu().tolist() == [[[0.0, 0.0], [100.0, 0.0]]]


frame = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
bg = torch.zeros(1, 4, 4, 3)


@pytest.mark.parametrize(
    "prev, cur, background, kwargs, message",
    [
        (frame.float(), frame, bg, {}, "prev must be uint8"),
        (frame, frame, bg.double(), {}, "background must be float32"),
        (frame, torch.zeros(1, 4, 5, 3, dtype=torch.uint8), bg, {}, "one shape"),
        (frame[..., :2], frame[..., :2], bg[..., :2], {}, "3 channels"),
        (frame[:0], frame[:0], bg[:0], {}, "empty"),
        (frame, frame, bg, {"alpha": 1.5}, "alpha"),
        (frame, frame, bg, {"grid": (0, 1)}, "grid"),
        (frame, frame, bg, {"grid": (5, 1)}, "grid"),
    ],
)
def test_bad_input_is_a_value_error(prev, cur, background, kwargs, message, device):
    prev, cur, background = on_device(device, prev, cur, background)
    kwargs = {"alpha": 0.5, "grid": (2, 2), **kwargs}
    with pytest.raises(ValueError, match=message):
        temporal_update(prev, cur, background, **kwargs)
    with pytest.raises(ValueError, match=message):
        temporal_update_reference(prev, cur, background, **kwargs)
