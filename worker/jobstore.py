"""The worker process's stores: one ``JobStore`` (its Lua scripts registered once) and one artifact store.

Both are built on first use in the process that runs jobs (a prefork child builds its own after the fork).
"""
from __future__ import annotations

from functools import lru_cache

from gpuq.common.records import JobStore
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import get_settings
from gpuq.common.storage import ArtifactStore, get_store


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    """One store (and its registered scripts) per process."""
    return JobStore(get_redis())


@lru_cache(maxsize=1)
def artifact_store() -> ArtifactStore:
    """The artifact store under ``GPUQ_ARTIFACT_DIR`` (resolving the root is a syscall: once per process)."""
    return get_store(get_settings().artifact_dir)
