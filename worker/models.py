"""Resident model cache: models stay loaded between jobs, bounded by a memory budget in bytes.

Sizes are measured from what a load really took: the growth of ``torch.cuda.memory_allocated`` across the load
on a GPU, the bytes of every parameter and buffer on the CPU. Least recently used models are evicted first;
pinned models (``GPUQ_PRELOAD``) never are. Admission is checked before loading where the weights on disk give
an estimate, so a model that cannot fit even in an empty cache fails at once with a clear error instead of
evicting everything and then running out of memory.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuq.common.errors import ResourceExhausted
from gpuq.worker.sizing import device_allocated, measure_bytes

log = logging.getLogger(__name__)
MiB = 1 << 20


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
    nbytes: int = 0
    pinned: bool = False


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    load_seconds: float = 0.0
    refused: int = 0


@dataclass
class _Pending:
    """A load in progress; other threads asking for the same key wait on it."""

    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class ResidentModels:
    """LRU cache of loaded models bounded by ``budget_bytes`` (and a model count); thread-safe, one load at a
    time."""

    def __init__(self, budget_bytes: int, max_models: int = 64, device: str = "cpu",
                 on_change: Callable[[list[str]], None] | None = None) -> None:
        self.budget = max(1, int(budget_bytes))
        self.max_models = max(1, max_models)
        self.device = device
        self.on_change = on_change
        self.stats = CacheStats()
        self._items: OrderedDict[ModelKey, Loaded] = OrderedDict()
        self._held: dict[str, int] = {}  # bytes held beside the models (KV caches), by owner
        self._pending: dict[ModelKey, _Pending] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one load at a time, so a GPU allocation delta is one model's

    def get(self, key: ModelKey, loader: Callable[[], Any],
            size_hint: int | Callable[[], int | None] | None = None, pin: bool = False) -> tuple[Any, float]:
        """Return (model, load_ms); load_ms is 0 when the model was already resident."""
        while True:
            with self._lock:
                hit = self._items.get(key)
                if hit is not None:
                    self._items.move_to_end(key)
                    hit.last_used = time.time()
                    hit.pinned = hit.pinned or pin
                    self.stats.hits += 1
                    return hit.value, 0.0
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = _Pending()
                    break
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
        try:
            value, load_ms = self._load(key, loader, size_hint, pin)
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.done.set()
        return value, load_ms

    def _load(self, key: ModelKey, loader: Callable[[], Any], hint: int | Callable[[], int | None] | None,
              pin: bool) -> tuple[Any, float]:
        with self._load_lock:
            self.stats.misses += 1
            size_hint = hint() if callable(hint) else hint
            if size_hint:
                self._admit(key, size_hint)
            before = device_allocated(self.device)
            start = time.perf_counter()
            value = loader()
            load_ms = (time.perf_counter() - start) * 1000
            after = device_allocated(self.device)
            nbytes = after - before if after is not None and before is not None else measure_bytes(value)
            self._insert(key, Loaded(value, load_ms, time.time(), max(nbytes, 0), pin))
        self.stats.loads += 1
        self.stats.load_seconds += load_ms / 1000
        log.info("loaded %s (%s) in %.0f ms, %.1f MiB; resident %.1f / %.1f MiB", key.model, key.task,
                 load_ms, nbytes / MiB, self.used() / MiB, self.budget / MiB)
        self._changed()
        return value, load_ms

    def _admit(self, key: ModelKey, need: int) -> None:
        """Refuse a model larger than the budget left by pinned models; else evict LRU entries for room."""
        with self._lock:
            pinned = sum(item.nbytes for item in self._items.values() if item.pinned)
            held = sum(self._held.values())
            if need > self.budget - pinned - held:
                self.stats.refused += 1
                raise ResourceExhausted(
                    f"model {key.model} needs about {need / MiB:.1f} MiB but the resident-model budget is "
                    f"{self.budget / MiB:.1f} MiB ({pinned / MiB:.1f} MiB pinned, {held / MiB:.1f} MiB of KV "
                    f"cache in use): it cannot fit even after evicting every other model (raise "
                    f"GPUQ_MODEL_CACHE_BUDGET or use a smaller dtype)")
            evicted = self._evict_until(need, len(self._items) >= self.max_models)
        if evicted:
            release_memory()
            self._changed()

    def _insert(self, key: ModelKey, item: Loaded) -> None:
        with self._lock:
            self._items[key] = item
            evicted = self._evict_until(0, len(self._items) > self.max_models, keep=key)
            if self._used() > self.budget:
                del self._items[key]
                self.stats.refused += 1
                over = ResourceExhausted(
                    f"model {key.model} took {item.nbytes / MiB:.1f} MiB, over the resident-model budget of "
                    f"{self.budget / MiB:.1f} MiB even after evicting every unpinned model")
            else:
                over = None
        if evicted or over:
            release_memory()
        if over:
            self._changed()
            raise over

    def _evict_until(self, need: int, count_full: bool, keep: ModelKey | None = None) -> list[ModelKey]:
        """Evict unpinned models, least recently used first, until ``need`` more bytes fit (lock held)."""
        evicted: list[ModelKey] = []
        for key in list(self._items):
            if not count_full and self._used() + need <= self.budget:
                break
            item = self._items[key]
            if item.pinned or key == keep:
                continue
            del self._items[key]
            evicted.append(key)
            count_full = False
            self.stats.evictions += 1
            log.info("evicted %s (%s), %.1f MiB", key.model, key.task, item.nbytes / MiB)
        return evicted

    def _used(self) -> int:
        return sum(item.nbytes for item in self._items.values()) + sum(self._held.values())

    def hold(self, owner: str, nbytes: int, keep: ModelKey | None = None) -> bool:
        """Set the bytes ``owner`` holds beside the models (a KV cache) to ``nbytes``, evicting unpinned models
        but ``keep``, least recently used first, to make room; False (and nothing changed) if it cannot fit."""
        with self._lock:
            grow = nbytes - self._held.get(owner, 0)
            spare = sum(v.nbytes for k, v in self._items.items() if not v.pinned and k != keep)
            if grow > 0 and self._used() + grow - spare > self.budget:
                return False  # would not fit even with every idle model gone: evict nothing
            evicted = self._evict_until(grow, False, keep=keep) if grow > 0 else []
            fits = grow <= 0 or self._used() + grow <= self.budget
            if fits and nbytes > 0:
                self._held[owner] = nbytes
            elif fits:
                self._held.pop(owner, None)
        if evicted:
            release_memory()
            self._changed()
        return fits

    def held(self) -> int:
        """Bytes held beside the models (KV caches)."""
        with self._lock:
            return sum(self._held.values())

    def used(self) -> int:
        """Bytes held by resident models."""
        with self._lock:
            return self._used()

    def keys(self) -> list[ModelKey]:
        """Resident keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def held_models(self) -> list[str]:
        """Distinct model references resident here (what affinity routing keys on)."""
        with self._lock:
            return sorted({key.model for key in self._items})

    def snapshot(self) -> list[dict[str, Any]]:
        """Each resident model with its size, pin and load time (for logs and metrics)."""
        with self._lock:
            return [{"model": k.model, "task": k.task, "dtype": k.dtype, "bytes": v.nbytes,
                     "pinned": v.pinned, "load_ms": round(v.load_ms, 1)} for k, v in self._items.items()]

    def clear(self) -> None:
        """Drop every resident model, pinned ones included."""
        with self._lock:
            self._items.clear()
        release_memory()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.held_models())
            except Exception as exc:  # noqa: BLE001 - publishing is best effort; the heartbeat repeats it
                log.warning("could not publish resident models: %s", exc)


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
_CACHE_LOCK = threading.Lock()
_on_change: Callable[[list[str]], None] | None = None


def on_change(callback: Callable[[list[str]], None] | None) -> None:
    """Who hears of every change of the process's resident models (the worker's wiring registers affinity's
    publisher; this module knows nothing of routing)."""
    global _on_change
    _on_change = callback


def get_cache() -> ResidentModels:
    """The process's cache (created lazily in the process that runs jobs)."""
    global _CACHE
    with _CACHE_LOCK:
        if _CACHE is None:
            from gpuq.common.settings import get_settings
            from gpuq.worker.device import device
            from gpuq.worker.sizing import default_budget

            settings = get_settings()
            dev = device()
            budget = int(settings.model_cache_budget) if settings.model_cache_budget else default_budget(dev)
            _CACHE = ResidentModels(budget, settings.model_cache_max_models, dev, on_change=_changed)
        return _CACHE


def peek_cache() -> ResidentModels | None:
    """The process's cache if a job or a preload has created it (never creates it: that imports torch)."""
    return _CACHE


def _changed(models: list[str]) -> None:
    if _on_change is not None:
        _on_change(models)
