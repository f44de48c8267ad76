"""``Prefer: wait=N``: hold a request open until its job finishes, without polling.

Workers publish each finished job's id on one pub/sub channel (in the same script that writes the terminal
state). Each API process keeps one subscription and wakes the requests waiting for that id. A notification
lost to a reconnect costs at most ``_RECHECK_S`` of latency: waiters re-read the status at that interval.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from common import keys
from common.redis_client import get_async_redis
from common.schemas import TERMINAL_STATUSES

log = logging.getLogger(__name__)
_RECHECK_S = 2.0


class DoneWaiter:
    """Per-process registry of requests waiting for jobs to finish."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._listener: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._client: aioredis.Redis | None = None

    async def _ensure_listening(self) -> None:
        if self._listener is None or self._listener.done():
            self._ready = asyncio.Event()
            self._listener = asyncio.create_task(self._listen(self._ready), name="gpuq-done-listener")
        assert self._ready is not None
        await asyncio.wait_for(self._ready.wait(), 5)

    async def _listen(self, ready: asyncio.Event) -> None:
        while True:
            client = get_async_redis()
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.done_channel())
                    ready.set()
                    async for message in pubsub.listen():
                        self._wake(str(message["data"]))
            except Exception as exc:  # noqa: BLE001 - reconnect; waiters fall back to re-reading the status
                log.warning("done-channel subscription lost: %s", exc)
                await asyncio.sleep(0.5)
            finally:
                await client.aclose()

    def _wake(self, job_id: str) -> None:
        for future in self._waiting.pop(job_id, ()):
            if not future.done():
                future.set_result(None)

    def register(self, job_id: str) -> asyncio.Future[None]:
        """Start listening for ``job_id`` before its message is published (so its end cannot be missed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[job_id].append(future)
        return future

    def forget(self, job_id: str, future: asyncio.Future[None]) -> None:
        """Stop waiting (timeout, or the request went away)."""
        futures = self._waiting.get(job_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiting[job_id]

    async def wait(self, job_id: str, future: asyncio.Future[None], timeout: float) -> bool:
        """True once the job is terminal, False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    return await self._terminal(job_id)
                try:
                    await asyncio.wait_for(asyncio.shield(future), min(left, _RECHECK_S))
                    return True
                except TimeoutError:
                    if await self._terminal(job_id):
                        return True
        finally:
            self.forget(job_id, future)

    async def _terminal(self, job_id: str) -> bool:
        if self._client is None:
            self._client = get_async_redis()
        return await self._client.hget(keys.job(job_id), "status") in TERMINAL_STATUSES

    async def start(self) -> None:
        """Subscribe (idempotent); call before registering waiters."""
        await self._ensure_listening()


WAITER = DoneWaiter()
