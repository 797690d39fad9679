"""`kernels.preprocess`: the Triton kernel against the torch reference (interpolate, antialias).

Tolerances: float32 output atol 1e-5 (the kernel's split float16 dots keep ~1e-6); float16
output atol 5e-3 (one float16 ulp at |x| ~ 2.6 is 2e-3, plus the kernel's float16 weights).
"""

import pytest
import torch

from kernels.preprocess import preprocess, preprocess_reference
from tests.kernels.placement import on_device

TOLERANCE = {torch.float32: 1e-5, torch.float16: 5e-3}


def frames_of(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)


def assert_matches_reference(frames, size, device, **kwargs):
    expected = preprocess_reference(frames, size, **kwargs)
    moved = frames.to(device) if isinstance(frames, torch.Tensor) else [f.to(device) for f in frames]
    out = preprocess(moved, size, **kwargs)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert out.device.type == device
    atol = TOLERANCE[kwargs.get("dtype", torch.float32)]
    torch.testing.assert_close(out.cpu(), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "n, h, w, size",
    [
        (2, 37, 53, (20, 24)),  # downscale, antialiased; output not a multiple of the 16x16 tile
        (1, 9, 7, (20, 24)),  # upscale: plain bilinear weights
        (1, 1, 1, (17, 18)),  # 1x1 input: every output pixel is that one pixel
        (3, 40, 19, (13, 33)),  # down in height, up in width; batch of 3
        (1, 70, 90, (1, 1)),  # 1x1 output: one window over the whole frame
        (1, 12, 12, (12, 12)),  # same size: the identity resize
    ],
)
def test_resize_matches_reference(device, n, h, w, size, dtype):
    assert_matches_reference(frames_of(n, h, w), size, device, dtype=dtype)


@pytest.mark.parametrize("pad_value", [0.0, 114.0])
def test_letterbox_keeps_aspect_and_pads(device, pad_value):
    # 61x33 into 24x20: resized to 24x13, centred with 3 and 4 padding columns.
    assert_matches_reference(frames_of(2, 61, 33), (24, 20), device, letterbox=True, pad_value=pad_value)


def test_letterbox_of_wide_frames_pads_rows(device):
    assert_matches_reference(frames_of(1, 20, 90), (24, 24), device, letterbox=True, pad_value=50.0)


def test_bgr_input_gives_rgb_output(device):
    frames = frames_of(2, 15, 21)
    assert_matches_reference(frames, (16, 16), device, channel_order="BGR")
    rgb = preprocess(frames.flip(-1).to(device), (16, 16))
    bgr = preprocess(frames.to(device), (16, 16), channel_order="BGR")
    # Same bytes in other places of the row: only the dots' summation order may differ.
    torch.testing.assert_close(rgb, bgr, atol=1e-6, rtol=0)


def test_custom_mean_std_fp16(device):
    assert_matches_reference(
        frames_of(1, 30, 30), (16, 20), device, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0), dtype=torch.float16
    )


def test_strided_input(device):
    big = frames_of(2, 50, 64)
    assert_matches_reference(big[:, 1::2, ::3], (16, 16), device)  # rows and columns skipped
    rgba = torch.randint(0, 256, (1, 20, 30, 4), dtype=torch.uint8)
    assert_matches_reference(rgba[..., :3], (16, 18), device)  # pixel stride 4


def test_list_of_differently_sized_frames(device):
    frames = [frames_of(1, 33, 47, seed=1)[0], frames_of(1, 8, 5, seed=2)[0], frames_of(1, 50, 20, seed=3)[0]]
    assert_matches_reference(frames, (16, 16), device)
    assert_matches_reference(frames, (16, 20), device, letterbox=True, dtype=torch.float16)


def test_constant_frame_normalizes_to_constant(device):
    frames = torch.full((1, 23, 31, 3), 200, dtype=torch.uint8, device=device)
    out = preprocess(frames, (16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    torch.testing.assert_close(out.cpu(), torch.full((1, 3, 16, 16), 200 / 255), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "frames, kwargs, message",
    [
        (torch.zeros(1, 8, 8, 3), {}, "uint8"),
        (torch.zeros(1, 8, 8, 4, dtype=torch.uint8), {}, "3 channels"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), {}, r"\(N, H, W, 3\)"),
        (torch.zeros(0, 8, 8, 3, dtype=torch.uint8), {}, "empty"),
        ([], {}, "empty list"),
        ([torch.zeros(8, 8, 3)], {}, "uint8"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), {"dtype": torch.bfloat16}, "float16 or torch.float32"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), {"channel_order": "RGBA"}, "channel_order"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), {"mean": (0.5, 0.5)}, "3 values"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), {"std": (1.0, 0.0, 1.0)}, "zeros"),
    ],
)
def test_bad_input_is_a_value_error(frames, kwargs, message, device):
    frames = on_device(device, frames)
    with pytest.raises(ValueError, match=message):
        preprocess(frames, (4, 4), **kwargs)
    with pytest.raises(ValueError, match=message):
        preprocess_reference(frames, (4, 4), **kwargs)


@pytest.mark.parametrize("size", [(0, 4), (4,), (4.5, 4)])
def test_bad_size_is_a_value_error(size, device):
    with pytest.raises(ValueError, match="size"):
        preprocess(torch.zeros(1, 8, 8, 3, dtype=torch.uint8, device=device), size)
