"""The API's hot path on the asyncio Redis client: store-and-enqueue and reading one record, with no thread-pool
hop per request (FastAPI runs a blocking call in its thread pool; the hop cost about a tenth of the API's CPU
per job). Everything else about records stays in ``common.records``."""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from common import keys
from common.records import _SUBMIT, record_body, record_for, replayed_job, submit_args
from common.schemas import JobRecord
from common.settings import get_settings


class AsyncJobStore:
    """Submit and read records from an event loop."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.r = client
        self._submit = client.register_script(_SUBMIT)

    async def create(self, fields: dict[str, Any], idem_key: str | None, request_hash: str,
                     message: tuple[str, str] | None = None) -> str | None:
        """As ``JobStore.create``."""
        script_keys, args = submit_args(fields, idem_key, request_hash, message)
        return replayed_job(await self._submit(keys=script_keys, args=args), request_hash)

    async def get(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """As ``JobStore.get``."""
        return record_for(await self.r.hgetall(keys.job(job_id)), job_id, tenant)

    async def body(self, job_id: str, tenant: str | None = None) -> bytes:
        """The record as response bytes (see ``records.record_body``)."""
        return record_body(await self.r.hgetall(keys.job(job_id)), job_id, tenant)


def async_job_store() -> AsyncJobStore:
    """A store over a blocking pool: under a burst, requests queue for a connection instead of failing."""
    pool = aioredis.BlockingConnectionPool.from_url(get_settings().resolved_redis_url, max_connections=64,
                                                    timeout=10, decode_responses=True, socket_connect_timeout=5)
    return AsyncJobStore(aioredis.Redis(connection_pool=pool))
