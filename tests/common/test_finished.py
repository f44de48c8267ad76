"""Waiting for jobs to finish on one subscription per event loop, against a real Redis."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from gpuq.common import finished, keys
from gpuq.common.records import JobStore


@pytest.fixture()
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield JobStore(client)
    client.close()


def _queued(store: JobStore) -> str:
    job_id = uuid.uuid4().hex
    store.create({"id": job_id, "tenant": "finished-t", "kind": "synthetic", "model": "m", "queue": "q",
                  "status": "queued", "timings": {"submitted_at": time.time()}}, None, "")
    return job_id


def _finish(store: JobStore, job_id: str, event: str = "completed") -> None:
    status = {"completed": "succeeded", "failed": "failed", "cancelled": "cancelled"}[event]
    store.transition(job_id, ["queued", "running"], {"status": status}, event)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_finishing_job_wakes_its_waiter_through_the_subscription(store: JobStore,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finished, "RECHECK_S", 60.0)  # no re-read would come in time: only the notification
    ids = [_queued(store) for _ in range(3)]

    async def scenario() -> tuple[bool, float]:
        start = time.monotonic()
        waiting = asyncio.create_task(finished.wait_all_finished(ids, 30))
        await asyncio.sleep(0.3)
        for job_id, event in zip(ids, ("completed", "failed", "cancelled")):
            await asyncio.to_thread(_finish, store, job_id, event)
        return await waiting, time.monotonic() - start

    done, took = _run(scenario())
    assert done and took < 10


def test_a_terminal_event_without_a_notification_is_found_by_the_re_read(store: JobStore,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finished, "RECHECK_S", 0.2)
    job_id = _queued(store)

    async def scenario() -> bool:
        waiting = asyncio.create_task(finished.wait_all_finished([job_id], 30))
        await asyncio.sleep(0.3)
        store.r.xadd(keys.events(job_id), {"type": "completed", "data": "{}"})  # as if the message was lost
        return await waiting

    assert _run(scenario())


def test_finished_jobs_answer_at_once_and_unfinished_ones_time_out(store: JobStore) -> None:
    done, running = _queued(store), _queued(store)
    _finish(store, done)
    assert _run(finished.wait_all_finished([done], 30))
    start = time.monotonic()
    assert not _run(finished.wait_all_finished([done, running], 0.5))
    assert time.monotonic() - start >= 0.5


def test_many_waiters_share_one_subscription_and_leave_nothing_registered(store: JobStore) -> None:
    ids = [_queued(store) for _ in range(200)]

    async def scenario() -> tuple[list[bool], int, int]:
        before = len(store.r.client_list())
        tasks = [asyncio.create_task(finished.wait_all_finished([job_id], 30)) for job_id in ids]
        await asyncio.sleep(0.5)
        during = len(store.r.client_list())
        for job_id in ids:
            _finish(store, job_id)
        results = list(await asyncio.gather(*tasks))
        return results, during - before, len(finished.finished_waiter()._waiting)

    results, extra_connections, registered = _run(scenario())
    assert all(results)
    assert extra_connections < 10  # one subscription and a few pooled connections, not one per waiter
    assert registered == 0
