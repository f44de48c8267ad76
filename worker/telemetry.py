"""Worker telemetry, published to Redis by the process that runs jobs (the prefork pool child).

The model cache, run times and batch sizes live in the pool child, while the metrics server runs in the
worker's parent (which never imports torch). The child writes a per-node hash and a few histogram hashes
after each job and after preloading; the parent's collector (worker/metrics_server.py) reads them at
scrape time. Counters are increments in Redis, so they survive a replaced child and stay monotonic.
Publishing is best effort: a Redis error is logged and never fails a job.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import redis

from gpuq.common import keys
from gpuq.common.stats import BATCH_BUCKETS, RUN_BUCKETS, RedisHistogram
from gpuq.worker.identity import node_name

log = logging.getLogger(__name__)
TTL_S = 7 * 86400  # per-node keys outlive a pod by a week, then go (node names churn with every pod)
CACHE_COUNTERS = ("hits", "misses", "evictions", "load_seconds")

_pending_batches: list[int] = []
_published_cache: dict[str, float] = {}


def run_histogram(node: str, kind: str) -> RedisHistogram:
    """Handler run time (model loading excluded) of ``kind`` jobs on ``node``."""
    return RedisHistogram(keys.worker_histogram(node, f"run:{kind}"), RUN_BUCKETS)


def batch_histogram(node: str) -> RedisHistogram:
    """Sizes of the forward batches ``node`` ran."""
    return RedisHistogram(keys.worker_histogram(node, "batch"), BATCH_BUCKETS)


def observe_batch(size: int) -> None:
    """Note one forward batch; published with the job's other numbers when it ends."""
    _pending_batches.append(int(size))


def queue_jobs_done(pipe: Any, kind: str, outcomes: list[tuple[str, float | None]]) -> None:
    """Count finished jobs of one kind, observe their run times ((status, run seconds) each) and publish cache
    and memory state: queued on ``pipe``, the round trip that writes their outcomes (worker/outcome.settle)."""
    node = node_name()
    statuses: dict[str, int] = {}
    for status, _ in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
    for status, n in statuses.items():
        count_job(pipe, node, kind, status, n)
    runs, values = run_histogram(node, kind), [max(s, 0.0) for _, s in outcomes if s is not None]
    if values:
        runs.observe_many(pipe, values)
        keep(pipe, runs.key)
    _queue_state(pipe, node, gauges=_gauges_due())


_GAUGE_INTERVAL_S = 0.5
_last_gauges: dict[str, Any] = {"at": 0.0, "models": -1}


def _gauges_due() -> bool:
    """Memory gauges (a /proc read or a CUDA query) at most every half second, or when the cache changed:
    a busy threads-pool worker finishes hundreds of jobs a second."""
    now, models = time.monotonic(), _resident_models()
    if now - _last_gauges["at"] < _GAUGE_INTERVAL_S and models == _last_gauges["models"]:
        return False
    _last_gauges.update(at=now, models=models)
    return True


def count_job(pipe: Any, node: str, kind: str, status: str, jobs: int = 1) -> None:
    """Queue the increment of ``jobs|<kind>|<status>`` on ``pipe``."""
    pipe.hincrby(keys.worker_stats(node), f"jobs|{kind}|{status}", jobs)
    keep(pipe, keys.worker_stats(node))


# A per-node key lives a week; refreshing its TTL once a minute keeps it as surely as an EXPIRE per job did
# (two or three of them per no-op job, a fifth of the worker's Redis commands).
_TTL_REFRESH_S = 60.0
_ttl_set: dict[str, float] = {}


def keep(pipe: Any, key: str) -> None:
    """Queue ``EXPIRE key TTL_S`` when this process has not refreshed that key's TTL for a minute."""
    now = time.monotonic()
    if now - _ttl_set.get(key, float("-inf")) >= _TTL_REFRESH_S:
        _ttl_set[key] = now
        pipe.expire(key, TTL_S)


def publish_state(client: redis.Redis, **fields: Any) -> None:
    """Publish cache counters, gauges and any extra ``fields`` (e.g. the preload state) now."""
    node = node_name()
    try:
        pipe = client.pipeline(transaction=False)
        if fields:
            pipe.hset(keys.worker_stats(node), mapping={k: str(v) for k, v in fields.items()})
        _queue_state(pipe, node)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001
        log.warning("could not publish worker telemetry: %s", exc)


def _queue_state(pipe: Any, node: str, gauges: bool = True) -> None:
    key = keys.worker_stats(node)
    batches = _pending_batches[:]
    _pending_batches.clear()
    if batches:
        sizes = batch_histogram(node)
        sizes.observe_many(pipe, batches)
        keep(pipe, sizes.key)
    _queue_cache_deltas(pipe, key)
    # Only where an engine ever ran: the metrics module itself is imported everywhere (the metrics server).
    if "gpuq.worker.generation.engine" in sys.modules:
        sys.modules["gpuq.worker.generation.metrics"].METRICS.publish(pipe, node)
    keep(pipe, key)
    if not gauges:
        return
    device, used, total, budget = device_memory()
    pipe.hset(key, mapping={"device": device, "device_memory_used_bytes": used,
                            "device_memory_total_bytes": total, "device_memory_budget_bytes": budget,
                            "resident_models": _resident_models(), "child_pid": os.getpid(),
                            "updated_at": time.time()})


def _cache() -> Any:
    """The resident-model cache if this process has one (reporting must not create it: that imports torch)."""
    from gpuq.worker.models import peek_cache

    return peek_cache()


def _resident_models() -> int:
    cache = _cache()
    return len(cache.keys()) if cache is not None else 0


def _queue_cache_deltas(pipe: Any, key: str) -> None:
    """Turn the cache's in-process totals into Redis increments (monotonic across child restarts)."""
    cache = _cache()
    if cache is None:
        return
    cache_stats = cache.stats
    for name in CACHE_COUNTERS:
        now = float(getattr(cache_stats, name, 0) or 0)
        delta = now - _published_cache.get(name, 0.0)
        if delta > 0:
            pipe.hincrbyfloat(key, f"cache_{name}", delta)
        _published_cache[name] = now


def device_memory() -> tuple[str, int, int, int]:
    """(device, used, total, budget) bytes. GPU numbers only when torch is already imported here.

    ``used`` is what torch's allocator holds for tensors on a GPU, or this process's RSS on CPU. The
    budget is the model cache's byte budget when it has one, else the device's total.
    """
    budget = int(getattr(_cache(), "budget", 0) or 0)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        index = torch.cuda.current_device()
        _, total = torch.cuda.mem_get_info(index)
        return f"cuda:{index}", int(torch.cuda.memory_allocated(index)), int(total), budget or int(total)
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return "cpu", _rss_bytes(), int(total), budget or int(total)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return 0
