"""Annotated dependency aliases for routes."""
from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends

from api.auth import tenant_for
from common.records import JobStore
from common.redis_client import get_redis
from common.settings import Settings, get_settings
from common.storage import ArtifactStore, get_store


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    """The job record store over the shared Redis pool."""
    return JobStore(get_redis())


def artifact_store() -> ArtifactStore:
    """The configured artifact store."""
    return get_store(get_settings().artifact_dir)


Tenant = Annotated[str, Depends(tenant_for)]
Jobs = Annotated[JobStore, Depends(job_store)]
Artifacts = Annotated[ArtifactStore, Depends(artifact_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
