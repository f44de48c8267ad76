"""Annotated dependency aliases for routes.

The dependencies are ``async def`` although they do no I/O: FastAPI runs a plain ``def`` dependency in its
thread pool, and three thread hops per request cost more than the work they wrap.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request

from gpuq.api.auth import tenant_for
from gpuq.common.records import JobStore
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import Settings, get_settings
from gpuq.common.storage import ArtifactStore, get_store


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    """The job record store over the shared Redis pool."""
    return JobStore(get_redis())


def artifact_store() -> ArtifactStore:
    """The configured artifact store."""
    return get_store(get_settings().artifact_dir)


async def _tenant(request: Request) -> str:
    return tenant_for(request)


async def _jobs() -> JobStore:
    return job_store()


async def _artifacts() -> ArtifactStore:
    return artifact_store()


async def _settings() -> Settings:
    return get_settings()


Tenant = Annotated[str, Depends(_tenant)]
Jobs = Annotated[JobStore, Depends(_jobs)]
Artifacts = Annotated[ArtifactStore, Depends(_artifacts)]
SettingsDep = Annotated[Settings, Depends(_settings)]
