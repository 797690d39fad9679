"""`kernels.yuv`: NV12 / I420 -> NCHW RGB, the Triton kernel against the torch reference, and the
reference's conversion (matrix, range, clamp, chroma upsampling) against FFmpeg's own (PyAV).

Tolerances: float32 output atol 1e-5 (the kernel's split float16 dots keep ~1e-6 on values up to
~2.6); float16 output atol 1e-2: one float16 ulp at |x| ~ 2.6 is 2e-3, and the colour matrix adds
up to three float16-rounded terms of ~2x a pixel's weight (the chroma coefficients reach 2.1).
"""

import numpy as np
import pytest
import torch

from kernels.yuv import (
    i420_to_tensor,
    i420_to_tensor_reference,
    nv12_to_tensor,
    nv12_to_tensor_reference,
    split_i420,
    split_nv12,
)
from tests.kernels.placement import on_device

TOLERANCES = [(torch.float32, 1e-5, 0.0), (torch.float16, 1e-2, 0.0)]
STANDARDS = ["bt601", "bt709"]
RANGES = [False, True]


def planes(n, h, w, seed=0):
    """Random y (n, h, w) and uv (n, ceil(h/2), ceil(w/2), 2) uint8 planes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 256, (n, h, w), dtype=torch.uint8, generator=g)
    uv = torch.randint(0, 256, (n, (h + 1) // 2, (w + 1) // 2, 2), dtype=torch.uint8, generator=g)
    return y, uv


def assert_close(out, expected, device, atol, rtol):
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("full_range", RANGES)
@pytest.mark.parametrize("standard", STANDARDS)
@pytest.mark.parametrize("dtype, atol, rtol", TOLERANCES)
@pytest.mark.parametrize(
    "n, h, w, size, letterbox",
    [
        (1, 18, 22, (8, 10), False),  # one tile, downscale (antialiased) in both planes
        (1, 17, 23, (8, 10), False),  # odd height and width: chroma planes of ceil(H/2) x ceil(W/2)
        (1, 20, 34, (12, 20), False),  # multi-block: two tiles side by side
        (1, 9, 11, (14, 15), False),  # upscale: plain bilinear in both planes
        (1, 24, 24, (16, 16), False),  # luma downscaled (antialiased), chroma upscaled (bilinear)
        (1, 30, 12, (12, 12), True),  # letterbox of a tall frame: padding columns left and right
        (1, 12, 30, (12, 12), True),  # letterbox of a wide frame: padding rows above and below
        (3, 12, 16, (6, 8), False),  # batch of frames: one program column per frame
    ],
)
def test_nv12_matches_reference(device, n, h, w, size, letterbox, dtype, atol, rtol, standard, full_range):
    y, uv = planes(n, h, w)
    kwargs = dict(standard=standard, full_range=full_range, letterbox=letterbox, pad_value=114.0, dtype=dtype)
    expected = nv12_to_tensor_reference(y, uv, size, **kwargs)
    assert_close(nv12_to_tensor(y.to(device), uv.to(device), size, **kwargs), expected, device, atol, rtol)


@pytest.mark.parametrize(
    "n, h, w, size, letterbox",
    [
        (1, 17, 23, (8, 10), False),  # odd width: three separate planes, each its own row stride
        (2, 20, 34, (12, 20), True),  # multi-block letterbox, batch of 2
    ],
)
def test_i420_matches_reference_and_nv12(device, n, h, w, size, letterbox):
    y, uv = planes(n, h, w, seed=2)
    u, v = uv[..., 0].contiguous(), uv[..., 1].contiguous()
    kwargs = dict(standard="bt601", letterbox=letterbox, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    expected = i420_to_tensor_reference(y, u, v, size, **kwargs)
    assert torch.equal(expected, nv12_to_tensor_reference(y, uv, size, **kwargs))
    got = i420_to_tensor(y.to(device), u.to(device), v.to(device), size, **kwargs)
    assert_close(got, expected, device, 1e-5, 0.0)


def test_pitched_nv12_surface(device):
    # A decoder surface: rows padded to a pitch of 32 bytes, Y rows then UV rows in one buffer.
    h, w = 12, 18
    y, uv = planes(2, h, w, seed=3)
    surface = torch.zeros(2, h * 3 // 2, 32, dtype=torch.uint8)
    surface[:, :h, :w] = y
    surface[:, h:, :w] = uv.flatten(-2)
    sy, suv = split_nv12(surface.to(device)[..., :w])
    assert sy.stride(-2) == 32 and suv.shape == (2, h // 2, w // 2, 2)
    expected = nv12_to_tensor_reference(y, uv, (8, 12), full_range=True)
    assert_close(nv12_to_tensor(sy, suv, (8, 12), full_range=True), expected, device, 1e-5, 0.0)


def test_unbatched_planes_give_one_frame(device):
    y, uv = planes(1, 10, 14, seed=4)
    out = nv12_to_tensor(y[0].to(device), uv[0].to(device), (6, 8))
    assert_close(out, nv12_to_tensor_reference(y, uv, (6, 8)), device, 1e-5, 0.0)


def test_split_i420_views_a_packed_buffer():
    h, w = 8, 6
    buffer = torch.arange(2 * h * 3 // 2 * w, dtype=torch.int64).remainder(251).to(torch.uint8)
    frames = buffer.view(2, h * 3 // 2, w)
    y, u, v = split_i420(frames)
    flat = frames.flatten(1)
    assert torch.equal(y.flatten(1), flat[:, : h * w])
    assert torch.equal(u.flatten(1), flat[:, h * w : h * w + h * w // 4])
    assert torch.equal(v.flatten(1), flat[:, h * w + h * w // 4 :])
    assert u.shape == v.shape == (2, h // 2, w // 2) and u.data_ptr() == frames.data_ptr() + h * w


def ffmpeg_rgb(buffer: np.ndarray, standard: str, full_range: bool) -> np.ndarray:
    """FFmpeg's (swscale's) yuv420p -> rgb24 of a packed I420 buffer: bilinear chroma
    upsampling, accurately rounded. PyAV is the CPU decoder's library: a GPU machine's Python may lack it."""
    av = pytest.importorskip("av")
    from av.video.reformatter import Interpolation

    space = {"bt601": "ITU601", "bt709": "ITU709"}[standard]
    frame = av.VideoFrame.from_ndarray(buffer, format="yuv420p")
    rgb = frame.reformat(
        format="rgb24", src_colorspace=space, dst_colorspace=space,
        src_color_range="JPEG" if full_range else "MPEG", dst_color_range="JPEG",
        interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT,
    )
    return rgb.to_ndarray()


@pytest.mark.parametrize("h, w", [(32, 48), (18, 26)])
@pytest.mark.parametrize("full_range", RANGES)
@pytest.mark.parametrize("standard", STANDARDS)
def test_reference_matches_ffmpeg(standard, full_range, h, w):
    # Random planes at the output size: the colour matrix, the range, the clamp (random colours
    # are often outside the RGB gamut) and the bilinear upsampling of chroma, against FFmpeg.
    # Codes stay in the standard's legal range: beyond it swscale's fixed point overflows.
    g = np.random.default_rng(7)
    low, y_high, c_high = (0, 255, 255) if full_range else (16, 235, 240)
    y = g.integers(low, y_high + 1, (h, w), dtype=np.uint8)
    chroma = g.integers(low, c_high + 1, (h // 2, w), dtype=np.uint8)  # U then V, packed
    buffer = np.concatenate([y, chroma])
    planes = split_i420(torch.from_numpy(buffer))
    out = i420_to_tensor_reference(
        *planes, (h, w), standard=standard, full_range=full_range, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
    )
    ours = (out[0].permute(1, 2, 0) * 255.0).numpy()
    # swscale rounds to 8 bits (with fixed-point coefficients): half a level, and a little more.
    np.testing.assert_allclose(ours, ffmpeg_rgb(buffer, standard, full_range), atol=0.52, rtol=0)


def test_split_matches_pyav_planes():
    av = pytest.importorskip("av")
    rgb = np.random.default_rng(8).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    i420 = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    planes = [
        np.frombuffer(bytes(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in i420.planes
    ]
    y, u, v = split_i420(torch.from_numpy(i420.to_ndarray()))
    y2, uv = split_nv12(torch.from_numpy(i420.reformat(format="nv12").to_ndarray()))
    for ours, theirs in ((y, planes[0]), (u, planes[1]), (v, planes[2]), (y2, planes[0]),
                         (uv[..., 0], planes[1]), (uv[..., 1], planes[2])):
        np.testing.assert_array_equal(ours.numpy(), theirs)


def test_limited_range_black_and_white_are_the_rgb_extremes():
    y = torch.tensor([16, 235], dtype=torch.uint8).view(2, 1, 1).expand(-1, 2, 2)
    uv = torch.full((2, 1, 1, 2), 128, dtype=torch.uint8)
    out = nv12_to_tensor_reference(y, uv, (2, 2), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[0.0] * 3, [1.0] * 3]), atol=1e-6, rtol=0)


def test_letterbox_border_is_the_pad_colour(device):
    y, uv = planes(1, 12, 30, seed=6)
    out = nv12_to_tensor(y.to(device), uv.to(device), (12, 12), letterbox=True, pad_value=114.0,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    # 12x30 into 12x12: resized to 5x12, rows 0-2 and 8-11 are padding.
    border = torch.cat([out[:, :, :3], out[:, :, 8:]], dim=2).cpu()
    torch.testing.assert_close(border, torch.full_like(border, 114 / 255), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "y, uv, kwargs, message",
    [
        (torch.zeros(8, 8), torch.zeros(4, 4, 2, dtype=torch.uint8), {}, "y must be uint8"),
        (torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(4, 4, 2), {}, "uv must be uint8"),
        (torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(4, 4, dtype=torch.uint8), {}, r"uv must be \(4, 4, 2\)"),
        (torch.zeros(9, 9, dtype=torch.uint8), torch.zeros(4, 4, 2, dtype=torch.uint8), {}, r"\(5, 5, 2\)"),
        (torch.zeros(2, 8, 8, dtype=torch.uint8), torch.zeros(1, 4, 4, 2, dtype=torch.uint8), {}, r"\(2, 4, 4, 2\)"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, 4, 2, dtype=torch.uint8), {}, r"\(N, H, W\)"),
        (torch.zeros(0, 8, dtype=torch.uint8), torch.zeros(0, 4, 2, dtype=torch.uint8), {}, "not empty"),
        ("y", torch.zeros(4, 4, 2, dtype=torch.uint8), {}, "y must be a torch.Tensor"),
        (torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(4, 4, 2, dtype=torch.uint8), {"standard": "bt2020"}, "standard"),
        (torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(4, 4, 2, dtype=torch.uint8), {"dtype": torch.bfloat16}, "float16"),
        (torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(4, 4, 2, dtype=torch.uint8), {"std": (1.0, 0.0, 1.0)}, "zeros"),
    ],
)
def test_bad_input_is_a_value_error(y, uv, kwargs, message, device):
    y, uv = on_device(device, y, uv)
    with pytest.raises(ValueError, match=message):
        nv12_to_tensor(y, uv, (4, 4), **kwargs)
    with pytest.raises(ValueError, match=message):
        nv12_to_tensor_reference(y, uv, (4, 4), **kwargs)


def test_bad_i420_planes_are_a_value_error(device):
    y = torch.zeros(8, 8, dtype=torch.uint8, device=device)
    with pytest.raises(ValueError, match=r"v must be \(4, 4\)"):
        i420_to_tensor(y, torch.zeros(4, 4, dtype=torch.uint8, device=device),
                       torch.zeros(4, 5, dtype=torch.uint8, device=device), (4, 4))


@pytest.mark.parametrize("split", [split_nv12, split_i420])
@pytest.mark.parametrize(
    "frame, message",
    [
        (torch.zeros(13, 8, dtype=torch.uint8), "H and W even"),  # 13 rows is not H * 3/2
        (torch.zeros(12, 7, dtype=torch.uint8), "H and W even"),
        (torch.zeros(12, 8), "uint8"),
        (torch.zeros(8, 12, dtype=torch.uint8).t(), "column stride 1"),
    ],
)
def test_bad_packed_frame_is_a_value_error(split, frame, message):
    with pytest.raises(ValueError, match=message):
        split(frame)
