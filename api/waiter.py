"""``Prefer: wait=N``: hold a request open until its job finishes, without polling.

Workers publish each finished job's id on one pub/sub channel (in the same script that writes the terminal
state, so the record is final before anyone is woken). Each API process keeps one subscription and wakes the
requests waiting for that id. A notification can only be lost while the subscription is down: after every
reconnect all waiters are woken to re-read their job's status once, and a waiter whose time runs out reads it
one last time.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from common import keys
from common.schemas import TERMINAL_STATUSES
from common.settings import get_settings

log = logging.getLogger(__name__)
DONE, RECHECK = "done", "recheck"


class DoneWaiter:
    """Per-process registry of requests waiting for jobs to finish."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[str]]] = defaultdict(list)
        self._listener: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._client: aioredis.Redis | None = None

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            # Blocking pool: a burst of status reads queues for a connection instead of failing.
            pool = aioredis.BlockingConnectionPool.from_url(
                get_settings().resolved_redis_url, max_connections=32, timeout=10, decode_responses=True)
            self._client = aioredis.Redis(connection_pool=pool)
        return self._client

    async def start(self) -> None:
        """Subscribe (once per process; again after the listener died); call before registering waiters."""
        if self._ready is not None and self._ready.is_set() and self._listener and not self._listener.done():
            return
        if self._listener is None or self._listener.done():
            self._ready = asyncio.Event()
            self._listener = asyncio.create_task(self._listen(self._ready), name="gpuq-done-listener")
        assert self._ready is not None
        await asyncio.wait_for(self._ready.wait(), 5)

    async def _listen(self, ready: asyncio.Event) -> None:
        first = True
        while True:
            try:
                async with self._redis().pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.done_channel())
                    ready.set()
                    if not first:
                        self._wake_all(RECHECK)  # finishes during the gap were not heard
                    first = False
                    async for message in pubsub.listen():
                        self._wake(str(message["data"]), DONE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect; waiters re-read their status afterwards
                log.warning("done-channel subscription lost: %s", exc)
                await asyncio.sleep(0.5)

    def _wake(self, job_id: str, why: str) -> None:
        for future in self._waiting.pop(job_id, ()):
            if not future.done():
                future.set_result(why)

    def _wake_all(self, why: str) -> None:
        for job_id in list(self._waiting):
            self._wake(job_id, why)

    def register(self, job_id: str) -> asyncio.Future[str]:
        """Start listening for ``job_id`` before its message is published (so its end cannot be missed)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[job_id].append(future)
        return future

    def forget(self, job_id: str, future: asyncio.Future[str]) -> None:
        """Stop waiting (timeout, or the request went away)."""
        futures = self._waiting.get(job_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiting[job_id]

    async def wait(self, job_id: str, future: asyncio.Future[str], timeout: float) -> bool:
        """True once the job is terminal, False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    why = await asyncio.wait_for(future, max(deadline - loop.time(), 0))
                except TimeoutError:
                    return await self._terminal(job_id)
                if why == DONE or await self._terminal(job_id):
                    return True
                future = self.register(job_id)
        finally:
            self.forget(job_id, future)

    async def _terminal(self, job_id: str) -> bool:
        return await self._redis().hget(keys.job(job_id), "status") in TERMINAL_STATUSES


WAITER = DoneWaiter()
