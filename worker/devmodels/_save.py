"""Shared helpers for the tiny-model builders: seeded initialisation and quiet saving."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers.utils import logging as hf_logging

SEED = 1234


class _Saveable(Protocol):
    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> Any: ...


@contextmanager
def seeded(seed: int = SEED) -> Iterator[None]:
    """Initialise under a fixed CPU seed, then give the caller's torch RNG state back untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence transformers' "Writing model shards" bars while saving, then restore the previous setting."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_all(path: Path, *parts: _Saveable) -> Path:
    """``save_pretrained`` every part (model, tokenizer, processor) into one directory and return it."""
    path.mkdir(parents=True, exist_ok=True)
    with quiet_progress():
        for part in parts:
            part.save_pretrained(path)
    return path
