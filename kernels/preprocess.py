"""Image preprocessing: uint8 HWC frames -> resized, normalized NCHW float tensors.

`preprocess` is the entry point the models call. This module holds the plain torch reference of
the math; the Triton-language kernel for CUDA tensors sits beside it behind the same signature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ImageNet statistics, the usual normalization for torchvision classifiers.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_reference(
    frames: torch.Tensor,
    size: tuple[int, int],
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, size[0], size[1]) normalized, bilinear with antialias."""
    _check_frames(frames)
    x = frames.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).to(dtype)


def preprocess(frames: torch.Tensor, size: tuple[int, int], **kwargs) -> torch.Tensor:
    return preprocess_reference(frames, size, **kwargs)


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3), got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames must not be empty, got shape {tuple(frames.shape)}")
