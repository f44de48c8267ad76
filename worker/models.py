"""Resident model cache: models stay loaded in the job-running process between jobs."""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """What makes two loads interchangeable."""

    model: str
    revision: str | None
    task: str
    dtype: str
    device: str


@dataclass
class Loaded:
    """A resident model and what it cost to load."""

    value: Any
    load_ms: float
    last_used: float


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    load_seconds: float = 0.0


class ResidentModels:
    """LRU cache of loaded models, bounded by a model count."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max(1, max_models)
        self._items: OrderedDict[ModelKey, Loaded] = OrderedDict()
        self._lock = threading.RLock()
        self.stats = CacheStats()

    def get(self, key: ModelKey, loader: Callable[[], Any]) -> tuple[Any, float]:
        """Return (model, load_ms); load_ms is 0 when the model was already resident."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                hit.last_used = time.time()
                self.stats.hits += 1
                return hit.value, 0.0
            self.stats.misses += 1
            while len(self._items) >= self.max_models:
                self._evict_oldest()
            start = time.perf_counter()
            value = loader()
            load_ms = (time.perf_counter() - start) * 1000
            self.stats.load_seconds += load_ms / 1000
            self._items[key] = Loaded(value, load_ms, time.time())
            log.info("loaded %s (%s) in %.0f ms", key.model, key.task, load_ms)
            return value, load_ms

    def _evict_oldest(self) -> None:
        key, _ = self._items.popitem(last=False)
        self.stats.evictions += 1
        log.info("evicted %s (%s)", key.model, key.task)
        release_memory()

    def keys(self) -> list[ModelKey]:
        """Resident keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Drop every resident model."""
        with self._lock:
            self._items.clear()
        release_memory()


def release_memory() -> None:
    """Return freed memory to the device and the OS (after an eviction or an OOM).

    ``malloc_trim`` matters on CPU: glibc keeps freed large blocks in the heap once its mmap threshold
    has grown, so without it a worker that once held a big allocation keeps that RSS forever.
    """
    gc.collect()
    _malloc_trim()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a worker dependency
        pass


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_CACHE: ResidentModels | None = None


def get_cache() -> ResidentModels:
    """The process's cache (created lazily in the process that runs jobs)."""
    global _CACHE
    if _CACHE is None:
        from common.settings import get_settings

        _CACHE = ResidentModels(get_settings().model_cache_max_models)
    return _CACHE
