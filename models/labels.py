"""Class labels: one name per line, line i naming class i."""

from __future__ import annotations

from pathlib import Path


def load_labels(path: Path, num_classes: int) -> list[str]:
    """Read a labels file; the count must match the classifier's, so an index never goes unnamed."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    labels = [line for line in lines if line]
    if len(labels) != num_classes:
        raise ValueError(f"{path} names {len(labels)} classes, the classifier has {num_classes}")
    return labels


def placeholder_labels(num_classes: int) -> list[str]:
    """Names for a classifier without a labels file of its own (the seeded weights have no meaning)."""
    return [f"class_{index:04d}" for index in range(num_classes)]
