"""Image classification end to end in one process: frames -> preprocess -> ResNet-50 -> top-k.

The Triton models run these same steps as separate models (and an ensemble); the video models and
the tests' reference run them here, in-process, with tensors staying on one device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.postprocess import softmax_topk
from kernels.preprocess import preprocess
from models.classifier import INPUT_SIZE, NUM_CLASSES, Classifier, ClassifierSettings
from models.labels import load_labels, placeholder_labels


@dataclass
class TopK:
    """Per image: class indices (N, k) int64 and probabilities (N, k) float32, best first."""

    indices: torch.Tensor
    scores: torch.Tensor

    def labels(self, names: list[str]) -> list[list[str]]:
        return [[names[i] for i in row] for row in self.indices.tolist()]


def preprocess_frames(frames: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) frames, sizes may differ -> (N, 3, 224, 224) float32 normalized pixels."""
    if isinstance(frames, torch.Tensor):
        return preprocess(frames, INPUT_SIZE)
    if len({tuple(f.shape) for f in frames}) == 1:
        return preprocess(torch.stack(frames), INPUT_SIZE)
    # Decoders may hand out strided views (nvJPEG's CHW seen as HWC); the kernel reads dense rows.
    return preprocess([f.contiguous() for f in frames], INPUT_SIZE)


class ImagePipeline:
    def __init__(self, classifier: Classifier, k: int = 5):
        self.classifier = classifier
        self.k = k

    def classify_pixels(self, pixels: torch.Tensor) -> TopK:
        scores, indices = softmax_topk(self.classifier(pixels), self.k)
        return TopK(indices=indices, scores=scores)

    def classify_frames(self, frames: list[torch.Tensor] | torch.Tensor) -> TopK:
        return self.classify_pixels(preprocess_frames(frames))


def build_from_parameters(params: dict[str, str], resolve, device: torch.device) -> tuple[ImagePipeline, list[str]]:
    """The pipeline and its labels from a model config's parameters.

    WEIGHTS and LABELS are paths that `resolve` turns into files (relative to the model's directory);
    a missing weights file means the seeded network, a missing labels file placeholder names.
    """
    weights = resolve(params["WEIGHTS"]) if params.get("WEIGHTS") else None
    classifier = Classifier(ClassifierSettings(weights=weights, seed=int(params.get("SEED", "0")), device=device))
    labels_path = resolve(params["LABELS"]) if params.get("LABELS") else None
    if labels_path is not None and labels_path.is_file():
        labels = load_labels(labels_path, NUM_CLASSES)
    else:
        labels = placeholder_labels(NUM_CLASSES)
    return ImagePipeline(classifier, k=int(params.get("TOP_K", "5"))), labels
