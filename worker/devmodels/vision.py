"""Tiny image classifier: ViT at 32x32 with 8x8 patches."""

from __future__ import annotations

from pathlib import Path

from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from gpuq.worker.devmodels._save import save_all, seeded

IMAGE_SIZE = 32
VIT_LABELS = ("cat", "dog", "bird", "fish")


def build_tiny_vit(path: Path, labels: tuple[str, ...] = VIT_LABELS) -> Path:
    """Build a ViTForImageClassification (32px, patch 8, hidden 32) and its image processor into ``path``."""
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    # The PIL backend needs no torchvision; the saved type is plain ViTImageProcessor, so AutoImageProcessor
    # picks whichever backend is installed at load time.
    processor = ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    with seeded():
        model = ViTForImageClassification(config).eval()
    return save_all(path, model, processor)
