"""Single submits at queue speed: one Redis round trip per event-loop tick of submits, on the event loop.

``POST /v1/jobs`` validates a job on the event loop (no thread-pool hop) and hands it to its loop's intake.
The intake sends what arrived in the same tick as one batch submit script (common/submit_script.py): each
job's record, quota admission, idempotency key, webhook registration and Celery message, atomically, in one
EVALSHA. A 202 therefore still means the record and its message are in Redis, and a submit that Redis refuses
(down, out of memory) stores nothing and gets a 503.

Jobs of a grouping kind (inference) are coalesced as before (api/coalesce.py describes the rule): the first
of a (kind, model, priority, queue) waits up to ``GPUQ_SUBMIT_COALESCE_MS`` for company, or until
``GPUQ_GROUP_MAX_JOBS`` have joined, but only while other submits are in flight, so a lone job goes at the
next tick; the group then travels as one ``gpuq.run_group`` message.
"""
from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast

import redis.asyncio as aioredis
from fastapi.concurrency import run_in_threadpool
from redis.exceptions import RedisError

from gpuq.api import queue, submission
from gpuq.api.deps import job_store
from gpuq.api.routing import Router
from gpuq.api.submission import Prepared, Submitted, affinity_router, prepare
from gpuq.common import keys
from gpuq.common.celery_message import GroupParts, MessageBuilder, Rendered
from gpuq.common.errors import ServiceUnavailable
from gpuq.common.jobs.registry import JobSpec
from gpuq.common.quotas import Quotas, limits, refusal
from gpuq.common.records import body_hash, fields_from_raw, replayed_job
from gpuq.common.redis_client import get_redis, loop_redis
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import Settings, get_settings
from gpuq.common.submit_script import (IN_FLIGHT_FULL, REPLAY, STORED, SUBMIT_BATCH, Entry, Message, Outcome,
                                      batch_args, outcomes)

# Jobs per script call: a tick with more is sent as several calls, so no single script holds Redis for long.
MAX_BATCH = 128


@dataclass(eq=False)
class _Item:
    prepared: Prepared
    idempotency_key: str | None
    request_hash: str
    pointer: tuple[str, int] | None
    queue: str
    future: asyncio.Future[Outcome]


@dataclass(eq=False)
class _Group:
    key: tuple[str, str, str, str]
    items: list[_Item] = field(default_factory=list)
    handle: asyncio.Handle | None = None


class Intake:
    """One event loop's submits: gathered per tick, coalesced per group, stored with one script call."""

    def __init__(self, client: aioredis.Redis, settings: Settings, router: Router, builder: MessageBuilder) -> None:
        self.client, self.settings, self.router, self.builder = client, settings, router, builder
        self.window_s, self.max_jobs = settings.submit_coalesce_ms / 1000, settings.group_max_jobs
        self._script = client.register_script(SUBMIT_BATCH)
        self._ready: list[list[_Item]] = []  # messages to send at the next flush: one job's, or a group's
        self._open: dict[tuple[str, str, str, str], _Group] = {}
        self._scheduled = False
        self._active = 0  # submits waiting for their answer
        self._sending: set[asyncio.Task[None]] = set()
        self._limits: dict[str, tuple[int, float, int]] = {}
        self._routing: dict[tuple[str, str], asyncio.Future[str]] = {}  # refreshes in flight, by (queue, model)

    async def submit(self, prepared: Prepared, idempotency_key: str | None = None, request_hash: str = "",
                     pointer: tuple[str, int] | None = None) -> Submitted:
        """Store and enqueue a job (or replay the one its idempotency key names); 429 over quota, 503 when
        Redis refuses. ``pointer`` (key, ttl) is set to the job's id in the same script call once it is stored."""
        tenant = prepared.fields["tenant"]
        alone = self._active == 0
        self._active += 1
        try:
            item = await self._item(prepared, idempotency_key, request_hash, pointer)
            self._enqueue(item, alone)
            outcome = await item.future
            if outcome.code == IN_FLIGHT_FULL and await self._pruned(tenant):
                item = await self._item(prepared, idempotency_key, request_hash, pointer)
                self._enqueue(item, alone=False)
                outcome = await item.future
        finally:
            self._active -= 1
        return await self._answer(prepared, request_hash, outcome)

    async def _item(self, prepared: Prepared, idempotency_key: str | None, request_hash: str,
                    pointer: tuple[str, int] | None) -> _Item:
        return _Item(prepared, idempotency_key, request_hash, pointer,
                     await self._routed(prepared.spec, prepared.fields["model"]),
                     asyncio.get_running_loop().create_future())

    async def _routed(self, spec: JobSpec, model: str) -> str:
        """The queue for a job of ``model``. When the routing table is stale, or a new model needs a worker, one
        thread refreshes it (Redis round trips, off the loop) for every submit that finds it so meanwhile; they
        then route from the fresh table as usual (each counted where it goes)."""
        if self.router.routes_offline(spec, model):
            return self.router.route(spec, model)
        key = (spec.queue, model)
        pending = self._routing.get(key)
        if pending is None:
            pending = self._routing[key] = asyncio.ensure_future(asyncio.to_thread(self.router.route, spec, model))
            pending.add_done_callback(lambda _: self._routing.pop(key, None))
            return await asyncio.shield(pending)
        routed = await asyncio.shield(pending)
        return self.router.route(spec, model) if self.router.routes_offline(spec, model) else routed

    def _enqueue(self, item: _Item, alone: bool) -> None:
        fields = item.prepared.fields
        if not item.prepared.spec.groups or self.window_s <= 0:
            self._ready.append([item])
            self._schedule()
            return
        key = (item.prepared.spec.kind, fields["model"], fields["priority"], item.queue)
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _Group(key)
            loop = asyncio.get_running_loop()
            group.handle = (loop.call_soon(self._release, group) if alone
                            else loop.call_later(self.window_s, self._release, group))
        group.items.append(item)
        if len(group.items) >= self.max_jobs:
            self._release(group)

    def _release(self, group: _Group) -> None:
        if self._open.get(group.key) is not group:
            return
        del self._open[group.key]
        if group.handle is not None:
            group.handle.cancel()
        self._ready.append(group.items)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        ready, self._ready = self._ready, []
        batch: list[list[_Item]] = []
        size = 0
        for message in ready:
            if batch and size + len(message) > MAX_BATCH:
                self._start(batch)
                batch, size = [], 0
            batch.append(message)
            size += len(message)
        if batch:
            self._start(batch)

    def _start(self, batch: list[list[_Item]]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[list[_Item]]) -> None:
        """One script call for the batch; every waiting submit gets its outcome or the error."""
        items = [item for message in batch for item in message]
        try:
            entries = [self._entry(item) for item in items]
            messages, start = [], 0
            for message in batch:
                messages.append(Message(list(range(start, start + len(message))), self._render(message)))
                start += len(message)
            script_keys, argv = batch_args(entries, messages, self.builder.event_topic)
            reply = await self._script(keys=script_keys, args=argv)
        except RedisError as exc:
            _fail(items, ServiceUnavailable(f"job store unavailable: {type(exc).__name__}"))
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting submit gets the error as it is
            _fail(items, exc)
        else:
            for item, outcome in zip(items, outcomes(reply)):
                if not item.future.done():
                    item.future.set_result(outcome)

    def _entry(self, item: _Item) -> Entry:
        fields = item.prepared.fields
        tenant = fields["tenant"]
        quota = self._limits.get(tenant)
        if quota is None:
            quota = self._limits[tenant] = limits(self.settings.quota_for(tenant))
        return Entry(fields, item.idempotency_key, item.request_hash, quota, item.prepared.webhook, item.pointer)

    def _render(self, message: list[_Item]) -> Rendered | GroupParts:
        first = message[0]
        spec, priority = first.prepared.spec, first.prepared.fields["priority"]
        if len(message) == 1:
            return self.builder.single(first.prepared.fields["id"], spec, priority, first.queue)
        ids = [item.prepared.fields["id"] for item in message]
        return self.builder.group(str(uuid.uuid4()), ids, spec, priority, first.queue)

    async def _pruned(self, tenant: str) -> bool:
        """Drop the tenant's finished jobs from its in-flight set (off the loop); whether any went."""
        quotas = Quotas(get_redis(), self.settings)
        try:
            return bool(await asyncio.to_thread(quotas.prune, tenant))
        except RedisError as exc:
            raise ServiceUnavailable(f"job store unavailable: {type(exc).__name__}") from exc

    async def _answer(self, prepared: Prepared, request_hash: str, outcome: Outcome) -> Submitted:
        if outcome.code == STORED:
            return Submitted(prepared.fields, replayed=False)  # what was just stored: no read back
        tenant = prepared.fields["tenant"]
        if outcome.code == REPLAY:
            job_id = str(replayed_job(outcome.value, request_hash))
            try:
                raw = cast(dict[str, str], await self.client.hgetall(keys.job(job_id)))
            except RedisError as exc:
                raise ServiceUnavailable(f"job store unavailable: {type(exc).__name__}") from exc
            return Submitted(fields_from_raw(raw, job_id, tenant), replayed=True)
        quota = self.settings.quota_for(tenant)
        refused = refusal(outcome.code - 1, float(outcome.value or 0), tenant, quota)
        raise refused or RuntimeError(f"unknown submit outcome {outcome.code}")


def _fail(items: list[_Item], exc: Exception) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)


@lru_cache(maxsize=1)
def message_builder() -> MessageBuilder:
    """The process's Celery message renderer (over the producer app: same origin, clock and options)."""
    return MessageBuilder(queue.producer_app(), get_settings())


_INTAKES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Intake] = weakref.WeakKeyDictionary()


def intake() -> Intake:
    """The running event loop's intake."""
    loop = asyncio.get_running_loop()
    found = _INTAKES.get(loop)
    if found is None:
        found = _INTAKES[loop] = Intake(loop_redis(), get_settings(), affinity_router(), message_builder())
    return found


async def accept(body: JobRequest, tenant: str, settings: Settings, idempotency_key: str | None = None,
                 pointer: tuple[str, int] | None = None) -> Submitted:
    """Validate, admit, store and enqueue one job: on the loop in one round trip (``GPUQ_SUBMIT_ONE_TRIP``),
    else through Celery's publish in the thread pool. ``pointer`` (key, ttl) is set to the id of a job stored
    (not of a replay)."""
    if not settings.submit_one_trip:
        done = await run_in_threadpool(submission.submit, body, tenant, job_store(), settings, idempotency_key)
        if pointer is not None and not done.replayed:
            await _point(pointer, done.job_id)
        return done
    prepared = prepare(body, tenant, settings)
    request_hash = body_hash(body.model_dump(mode="json")) if idempotency_key else ""
    return await intake().submit(prepared, idempotency_key, request_hash, pointer)


async def _point(pointer: tuple[str, int], job_id: str) -> None:
    try:
        await loop_redis().set(pointer[0], job_id, ex=pointer[1])
    except RedisError as exc:
        raise ServiceUnavailable(f"job store unavailable: {type(exc).__name__}") from exc
