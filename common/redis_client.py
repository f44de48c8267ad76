"""Redis connections for gpuq's own keys (the broker connection is Celery's)."""
from __future__ import annotations

from functools import lru_cache

import redis
import redis.asyncio as aioredis

from common.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """Process-wide synchronous client with a connection pool."""
    url = get_settings().resolved_redis_url
    # Every thread may hold one connection at a time (API thread pool, a worker's threads pool): the pool must
    # not cap below that (redis-py's default is 100).
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30, max_connections=2048,
                                socket_connect_timeout=5, socket_timeout=30, retry_on_timeout=True)


def get_async_redis() -> aioredis.Redis:
    """A new asyncio client (one per event loop)."""
    url = get_settings().resolved_redis_url
    return aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
