"""Redis connections for gpuq's own keys (the broker connection is Celery's).

``GPUQ_REDIS_URL`` is one of:

- ``redis://[:password@]host:port/db`` or ``rediss://...`` (TLS; options such as ``ssl_cert_reqs`` and
  ``ssl_ca_certs`` go in the query string, as for Celery's broker);
- ``sentinel://[:password@]host:port/db;sentinel://host2:port...``: the sentinels to ask for the current
  primary of ``GPUQ_REDIS_SENTINEL_MASTER``. The same string is Celery's broker URL (kombu parses it the
  same way), so the job records and the broker always follow the same primary.
"""
from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
from gpuq.common.settings import Settings, get_settings
from redis import exceptions as rexc
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.retry import Retry
from redis.sentinel import Sentinel
from redis.utils import HIREDIS_AVAILABLE

_COMMON: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": 5}
# Every open SSE stream holds one connection while it blocks (waits for a result share one subscription);
# redis-py's asyncio default of 100 would refuse the 101st (Redis itself allows 10,000 clients).
_ASYNC_MAX_CONNECTIONS = 4096


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``sentinel://`` URL list."""

    hosts: list[tuple[str, int]]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel(url: str) -> bool:
    """True for Celery-style ``sentinel://`` URL lists."""
    return url.strip().lower().startswith("sentinel://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split ``sentinel://[user:pw@]h1:p1/db;sentinel://h2:p2`` into hosts, db and the data credentials.

    As in kombu, credentials and db come from the first entry that carries them; they are the *Redis*
    credentials. Sentinels that want their own password get it from ``GPUQ_REDIS_SENTINEL_PASSWORD``.
    """
    hosts: list[tuple[str, int]] = []
    db, user, password = 0, None, None
    for part in (p.strip() for p in url.split(";") if p.strip()):
        parts = urlsplit(part)
        if parts.scheme != "sentinel" or not parts.hostname:
            raise ValueError(f"not a sentinel:// URL: {part.split('@')[-1]!r}")
        hosts.append((parts.hostname, parts.port or 26379))
        if parts.path.strip("/") and db == 0:
            db = int(parts.path.strip("/"))
        if parts.password and password is None:
            password, user = unquote(parts.password), unquote(parts.username) if parts.username else None
    return SentinelURL(hosts, db, user, password)


def failover_retry() -> Retry:
    """Retry long enough to ride over a Sentinel failover (a few seconds), then give up."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=12,
                 supported_errors=(rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError))


def reconnect_retry() -> Retry:
    """Retry a command whose connection broke, on a fresh connection, a few times within about a second.

    ``from_url`` clients get no retries at all by default (the pool's connections are built without one), so
    after Redis restarts, the first command on each pooled connection, now closed by the server, failed: a
    503 on a healthy Redis, or an SSE replay cut off after its 200. Errors are retried only when the
    connection failed (connect, send, or a reply that never came), not on an error reply.
    """
    return Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), retries=3,
                 supported_errors=(rexc.ConnectionError, rexc.TimeoutError))


def _sentinel_kwargs(settings: Settings) -> dict[str, Any] | None:
    secret = settings.redis_sentinel_password
    return {"password": secret.get_secret_value()} if secret else None


def _master_kwargs(parsed: SentinelURL) -> dict[str, Any]:
    return {"db": parsed.db, "username": parsed.username, "password": parsed.password,
            "retry": failover_retry(), **_COMMON}


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """Process-wide synchronous client with a connection pool."""
    settings = get_settings()
    url = settings.resolved_redis_url
    if is_sentinel(url):
        parsed = parse_sentinel_url(url)
        sentinel = Sentinel(parsed.hosts, sentinel_kwargs=_sentinel_kwargs(settings),  # type: ignore[no-untyped-call]
                            socket_timeout=2, socket_connect_timeout=2)
        client = sentinel.master_for(settings.redis_sentinel_master, socket_timeout=30,  # type: ignore[no-untyped-call]
                                     health_check_interval=30, **_master_kwargs(parsed))
        return cast(redis.Redis, client)
    # Every thread may hold one connection at a time (API thread pool, a worker's threads pool): the pool must
    # not cap below that (redis-py's default is 100).
    return redis.Redis.from_url(url, health_check_interval=30, socket_timeout=30, max_connections=2048,
                                retry=reconnect_retry(), **_COMMON)


class _HiredisPacking:
    """Packs commands with hiredis, as redis-py's synchronous connections already do (its own serializer).

    redis-py's asyncio connection packs in Python, encoding each argument and joining a growing buffer once
    per argument: a script call with a few thousand arguments (a tick of submits, common/submit_script.py)
    spent about 2 us per argument there, against 0.5 us with hiredis. hiredis takes the same argument types
    and writes them the same way (UTF-8 text, ``repr`` of numbers; bool and None refused)."""

    _hiredis_serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._hiredis_serializer.pack(*args)  # type: ignore[no-any-return]


def _pack_with_hiredis(client: aioredis.Redis) -> aioredis.Redis:
    pool = client.connection_pool
    if HIREDIS_AVAILABLE and not issubclass(pool.connection_class, _HiredisPacking):
        pool.connection_class = type(f"Hiredis{pool.connection_class.__name__}",
                                     (_HiredisPacking, pool.connection_class), {})
    return client


def get_async_redis() -> aioredis.Redis:
    """A new asyncio client (one per event loop), for blocking stream reads.

    No socket read timeout: redis-py 8 defaults it to 5 s, which would cut every ``XREAD BLOCK`` longer
    than that (SSE keep-alives, ``Prefer: wait``); each blocking call bounds itself with ``block``.
    """
    settings = get_settings()
    url = settings.resolved_redis_url
    if is_sentinel(url):
        parsed = parse_sentinel_url(url)
        sentinel = aiosentinel.Sentinel(parsed.hosts,  # type: ignore[no-untyped-call]
                                        sentinel_kwargs=_sentinel_kwargs(settings),
                                        socket_timeout=2, socket_connect_timeout=2)
        client = sentinel.master_for(settings.redis_sentinel_master,
                                     **{**_master_kwargs(parsed), "socket_timeout": None,
                                        "max_connections": _ASYNC_MAX_CONNECTIONS})
        return _pack_with_hiredis(cast(aioredis.Redis, client))
    return _pack_with_hiredis(aioredis.Redis.from_url(url, socket_timeout=None, health_check_interval=30,
                                                      max_connections=_ASYNC_MAX_CONNECTIONS, retry=_async_retry(),
                                                      **_COMMON))


def _async_retry() -> Any:
    """``reconnect_retry`` for asyncio clients (redis.asyncio has its own Retry class)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    return AsyncRetry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), retries=3,
                      supported_errors=(rexc.ConnectionError, rexc.TimeoutError))


_LOOP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def loop_redis() -> aioredis.Redis:
    """The running event loop's shared asyncio client (the API's waits and event streams).

    One connection pool per loop: a request that blocks on a stream holds a connection while it waits and
    hands it back after, so a busy API reuses connections instead of opening (and handshaking) one per
    request, which cost more CPU than the wait itself. Never closed by callers.
    """
    loop = asyncio.get_running_loop()
    client = _LOOP_CLIENTS.get(loop)
    if client is None:
        client = _LOOP_CLIENTS[loop] = get_async_redis()
    return client
