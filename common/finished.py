"""Waiting for jobs to finish without a Redis connection (or a stream read) per waiting request.

The transition script (common/records.py) publishes a job's event-stream key on ``keys.finished()`` in the
same step that appends the job's terminal event. Each event loop keeps one subscription to that channel and a table
of the requests waiting on each stream: a notification wakes exactly the requests that wait for that job. A
request registers before it reads the last entry of its streams, so a job that finishes in between is seen
either way.

Pub/sub is fire and forget: a notification sent while the subscription reconnects is lost. A waiter therefore
re-reads the last entry of the streams it still waits on every ``RECHECK_S``: a lost notification delays an
answer by at most that long, it never loses it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gpuq.common import keys
from gpuq.common.outage import OUTAGE_ERRORS, Outage
from gpuq.common.redis_client import loop_redis
from gpuq.common.schemas import TERMINAL_EVENTS

log = logging.getLogger(__name__)
RECHECK_S = 2.0
_SUBSCRIBE_WAIT_S = 1.0  # how long a first waiter waits for the subscription before relying on re-reads


class FinishedWaiter:
    """One event loop's subscription to terminal notifications and the requests waiting on them."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Reads of streams' last entries asked for in the same loop iteration share one round trip.
        self._reads: list[tuple[list[str], asyncio.Future[set[str]]]] = []

    async def wait_all(self, stream_keys: list[str], timeout_s: float) -> bool:
        """True once every stream has its terminal event, False when ``timeout_s`` passed first."""
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in stream_keys}
        for key, future in futures.items():
            self._waiting.setdefault(key, set()).add(future)
        try:
            await self._ensure_subscribed(min(timeout_s, _SUBSCRIBE_WAIT_S))
            deadline = loop.time() + timeout_s
            pending = set(stream_keys)
            while True:
                try:
                    pending = await self._unfinished([k for k in pending if not futures[k].done()])
                except OUTAGE_ERRORS:  # a Redis blip mid-wait: keep waiting, re-read at the next recheck
                    pending = {k for k in pending if not futures[k].done()}
                left = deadline - loop.time()
                if not pending or left <= 0:
                    return not pending
                await asyncio.wait([futures[k] for k in pending], timeout=min(left, RECHECK_S))
                pending = {k for k in pending if not futures[k].done()}
                if not pending:
                    return True
        finally:
            for key, future in futures.items():
                waiters = self._waiting.get(key)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiting[key]
                future.cancel()

    async def _unfinished(self, stream_keys: list[str]) -> set[str]:
        """The streams whose last entry is not a terminal event."""
        if not stream_keys:
            return set()
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._reads.append((stream_keys, future))
        if len(self._reads) == 1:
            asyncio.get_running_loop().create_task(self._read_lasts())
        return await future

    async def _read_lasts(self) -> None:
        """Answer every read queued so far with one pipeline of XREVRANGEs."""
        reads, self._reads = self._reads, []
        wanted = list(dict.fromkeys(key for stream_keys, _ in reads for key in stream_keys))
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in wanted:
                pipe.xrevrange(key, count=1)
            lasts = cast(list[list[tuple[str, dict[str, str]]]], await pipe.execute())
        except asyncio.CancelledError:
            for _, future in reads:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every reader gets the error
            for _, future in reads:
                if not future.done():
                    future.set_exception(exc)
            return
        done = {key for key, last in zip(wanted, lasts) if last and last[0][1].get("type") in TERMINAL_EVENTS}
        for stream_keys, future in reads:
            if not future.done():
                future.set_result({key for key in stream_keys if key not in done})

    async def _ensure_subscribed(self, wait_s: float) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="gpuq-finished")
        if not self._subscribed.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), wait_s)

    async def _listen(self) -> None:
        """Keep the subscription (resubscribing after errors, however long Redis is away) and wake the waiters
        of each finished job; waiters re-read their streams meanwhile."""
        outage = Outage("finished-job subscription", log)
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.finished())
                self._subscribed.set()
                outage.ok()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._wake(str(message["data"]))
            except (RedisError, OSError) as exc:
                delay = outage.failed(exc)
            else:
                delay = 0.5
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)

    def _wake(self, stream_key: str) -> None:
        for future in self._waiting.get(stream_key, ()):
            if not future.done():
                future.set_result(None)


_WAITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FinishedWaiter] = weakref.WeakKeyDictionary()


def finished_waiter() -> FinishedWaiter:
    """The running event loop's waiter (its subscription starts with the first wait)."""
    loop = asyncio.get_running_loop()
    waiter = _WAITERS.get(loop)
    if waiter is None:
        waiter = _WAITERS[loop] = FinishedWaiter(loop_redis())
    return waiter


async def wait_all_finished(job_ids: list[str], timeout_s: float) -> bool:
    """True once every job has its terminal event (False when ``timeout_s`` passed first)."""
    return await finished_waiter().wait_all([keys.events(job_id) for job_id in job_ids], timeout_s)
