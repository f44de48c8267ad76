"""LoRA adapters on a resident pipeline: load once, switch per job, evict the least recently used.

The base weights are never touched: adapters are PEFT layers beside them (never fused), a job without an
adapter runs with LoRA disabled (so its output equals the base pipeline's, byte for byte), and eviction
deletes the adapter's layers rather than reloading the base.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuq.common.errors import InvalidInput, JobError
from gpuq.common.jobs.image import LORA_WEIGHT_FILE, pick_weight_file, split_job_ref
from gpuq.common.refs import is_hub_id
from gpuq.common.storage import ArtifactStore
from gpuq.worker.sources import local_model_dir

log = logging.getLogger(__name__)
FIELD = "params.adapter.ref"


@dataclass(frozen=True)
class AdapterUse:
    """What applying an adapter cost one job."""

    name: str
    weight: float
    load_ms: float
    cached: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "load_ms": round(self.load_ms, 3),
                "cached": self.cached}


class AdapterCache:
    """The adapters loaded into one pipeline, bounded by ``capacity`` (LRU)."""

    def __init__(self, pipe: Any, capacity: int) -> None:
        self.pipe = pipe
        self.capacity = max(1, capacity)
        self._loaded: OrderedDict[str, Path] = OrderedDict()
        self.evictions = 0

    @property
    def loaded(self) -> list[str]:
        """Adapter names, least recently used first."""
        return list(self._loaded)

    def activate(self, weights: Path, weight: float) -> AdapterUse:
        """Make ``weights`` the only active adapter at ``weight``, loading it unless already resident."""
        name = adapter_name(weights)
        load_ms, cached = 0.0, name in self._loaded
        if cached:
            self._loaded.move_to_end(name)
        else:
            while len(self._loaded) >= self.capacity:
                self._evict_oldest()
            load_ms = self._load(name, weights)
        self.pipe.enable_lora()
        self.pipe.set_adapters([name], adapter_weights=[weight])
        return AdapterUse(name, weight, load_ms, cached)

    def deactivate(self) -> None:
        """Run the next generation on the base weights alone."""
        if self._loaded:
            self.pipe.disable_lora()

    def _load(self, name: str, weights: Path) -> float:
        start = time.perf_counter()
        try:
            self.pipe.load_lora_weights(str(weights), adapter_name=name)
        except Exception as exc:  # a bad file must not leave half an adapter behind
            self._discard(name)
            if type(exc).__name__ == "OutOfMemoryError":
                raise
            raise JobError(f"LoRA adapter could not be loaded: {type(exc).__name__}: {str(exc)[:300]}"
                           ) from None
        self._loaded[name] = weights
        ms = (time.perf_counter() - start) * 1000
        log.info("loaded LoRA %s from %s in %.0f ms", name, weights, ms)
        return ms

    def _discard(self, name: str) -> None:
        try:
            self.pipe.delete_adapters(name)
        except Exception as exc:  # noqa: BLE001 - nothing was injected under that name
            log.debug("no partial LoRA %s to remove: %s", name, exc)

    def _evict_oldest(self) -> None:
        name, weights = self._loaded.popitem(last=False)
        self.pipe.delete_adapters(name)
        self.evictions += 1
        log.info("evicted LoRA %s (%s)", name, weights)


def adapter_name(weights: Path) -> str:
    """A stable adapter name for a weights file: its path plus size and mtime, so a rewritten file reloads."""
    stat = weights.stat()
    key = f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return "gpuq_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def resolve_weights(adapter: dict[str, Any], tenant: str, store: ArtifactStore, token: str | None) -> Path:
    """The local weights file of an adapter reference (a job's artifact, a local folder or a Hub repo)."""
    source, weight_name = adapter["source"], adapter.get("weight_name")
    if source == "job":
        job_id, _ = split_job_ref(adapter["ref"])
        return store.local_path(tenant, job_id, adapter["artifact"])
    if source == "local":
        folder = local_model_dir(str(adapter["ref"]), FIELD)
        names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        chosen = pick_weight_file(names, weight_name)
        if chosen is None:
            raise InvalidInput(f"{FIELD}: no single LoRA .safetensors file in {folder} "
                               "(name it with params.adapter.weight_name)", field=FIELD)
        return folder / chosen
    if not is_hub_id(str(adapter["ref"])):
        raise InvalidInput(f"{FIELD}: not a Hub repo id (owner/name)", field=FIELD)
    return _from_hub(adapter["ref"], weight_name or LORA_WEIGHT_FILE, adapter.get("revision"), token)


def _from_hub(repo_id: str, filename: str, revision: str | None, token: str | None) -> Path:
    """Download (or find in the HF cache) one weights file of a Hub repo."""
    from huggingface_hub import hf_hub_download

    from gpuq.worker.hub import cache_dir, with_retries

    return Path(with_retries(lambda: hf_hub_download(repo_id, filename, revision=revision, token=token,
                                                     cache_dir=cache_dir(token)),
                             f"download LoRA {repo_id}/{filename}"))
