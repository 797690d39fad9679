"""The image classifier the Triton models serve: ResNet-50, loaded once per model instance.

Weights come from a file when one is configured and present (a torchvision-style state_dict),
otherwise from a seeded initialization: the server never downloads anything. On a GPU the network
runs in float16 with channels_last memory, the layout tensor cores want for convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models.resnet import ResNet, resnet50, seeded_init_

NUM_CLASSES = 1000
INPUT_SIZE = (224, 224)


@dataclass(frozen=True)
class ClassifierSettings:
    weights: Path | None = None
    seed: int = 0
    device: torch.device = torch.device("cpu")
    # None: float16 on CUDA, float32 on CPU (CPU float16 convolutions are slow and inexact).
    half: bool | None = None

    @property
    def use_half(self) -> bool:
        return self.device.type == "cuda" if self.half is None else self.half


def build_network(weights: Path | None, seed: int) -> tuple[ResNet, str]:
    """The network on the CPU in float32, and where its weights came from."""
    model = resnet50(NUM_CLASSES)
    if weights is not None and Path(weights).is_file():
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        source = str(weights)
    else:
        seeded_init_(model, seed)
        source = f"seed {seed}"
    return model.eval(), source


class Classifier:
    """Pixels (N, 3, 224, 224) float, on any device -> logits (N, 1000) float32 on the instance's device."""

    def __init__(self, settings: ClassifierSettings):
        self.settings = settings
        model, self.weights_source = build_network(settings.weights, settings.seed)
        self.dtype = torch.float16 if settings.use_half else torch.float32
        self.model = model.to(settings.device, dtype=self.dtype, memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (N, 3, H, W), got shape {tuple(pixels.shape)}")
        x = pixels.to(self.settings.device, dtype=self.dtype, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run once per batch size, so cuDNN picks its algorithms before the first request."""
        for size in batch_sizes:
            self(torch.zeros(size, 3, *INPUT_SIZE, device=self.settings.device))
