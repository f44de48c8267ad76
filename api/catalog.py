"""The API's view of the model catalog: the sources in common/catalog.py plus what only Redis knows (which live
workers hold which models, the tenant's finished fine-tunes)."""
from __future__ import annotations

import threading
import time
from typing import cast

import redis
from gpuq.common import catalog, keys
from gpuq.common.catalog import ModelEntry
from gpuq.common.errors import NotFound
from gpuq.common.records import JobStore
from gpuq.common.settings import Settings

# Directory scans are cached briefly: a client listing models in a loop must not walk the roots each time.
SCAN_TTL_S = 5.0
MAX_FINE_TUNES = 200
_scans: dict[tuple[str, ...], tuple[float, list[ModelEntry]]] = {}
_scan_lock = threading.Lock()


def resident_models(r: redis.Redis) -> dict[str, list[str]]:
    """{model reference: live nodes holding it}, from the workers' published resident sets."""
    live = cast(list[str], r.zrangebyscore(keys.worker_expiry(), time.time(), "+inf"))
    if not live:
        return {}
    pipe = r.pipeline(transaction=False)
    for node in live:
        pipe.smembers(keys.worker_models(node))
    held: dict[str, list[str]] = {}
    replies: list[set[str]] = pipe.execute()
    for node, models in zip(live, replies):
        for model in models:
            held.setdefault(str(model), []).append(node)
    return held


def _scanned(settings: Settings) -> list[ModelEntry]:
    roots, hub_cache = settings.model_roots, settings.hub_cache
    key = (*map(str, roots), str(hub_cache))
    now = time.monotonic()
    with _scan_lock:
        hit = _scans.get(key)
        if hit is not None and now - hit[0] < SCAN_TTL_S:
            return [e.model_copy(deep=True) for e in hit[1]]
    entries = catalog.root_entries(settings) + catalog.cache_entries(hub_cache)
    with _scan_lock:
        _scans[key] = (now, entries)
    return [e.model_copy(deep=True) for e in entries]


def list_models(settings: Settings, jobs: JobStore, tenant: str) -> list[ModelEntry]:
    """Every model the tenant can name in a job, OpenAI-list ordered: local and cached first, then fine-tunes."""
    found = _scanned(settings)
    # A fine-tune's base is stored as the reference the API resolved (a path for local models): name it by id.
    base_ids = {e.path: e.id for e in found if e.path}
    done = jobs.list_jobs(tenant, MAX_FINE_TUNES, status="succeeded", kind="finetune")
    entries = found + catalog.fine_tune_entries(done, base_ids)
    return catalog.merge(entries, resident_models(jobs.r))


def get_model(settings: Settings, jobs: JobStore, tenant: str, model_id: str) -> ModelEntry:
    """One model by id; 404 naming ``model`` when this deployment (or this tenant) has no such model."""
    for entry in list_models(settings, jobs, tenant):
        if entry.id == model_id:
            return entry
    raise NotFound(f"model {model_id!r} not found: GET /v1/models lists what this deployment serves",
                   field="model")
