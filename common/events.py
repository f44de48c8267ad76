"""Per-job event streams (Redis Streams): written by workers, replayed by SSE, webhooks and the CLI."""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from common import keys
from common.schemas import TERMINAL_EVENTS, JobEvent
from common.settings import get_settings


def append(client: redis.Redis, job_id: str, type_: str, data: dict[str, Any]) -> str:
    """Append one event to the job's stream and return its id."""
    pipe = client.pipeline(transaction=False)
    pipe.xadd(keys.events(job_id), {"type": type_, "data": json.dumps(data)})
    pipe.expire(keys.events(job_id), get_settings().record_ttl_s)
    event_id, _ = pipe.execute()
    return str(event_id)


def _parse(entry_id: str, fields: dict[str, str]) -> JobEvent:
    return JobEvent(id=entry_id, type=fields["type"], data=json.loads(fields.get("data") or "{}"))  # type: ignore[arg-type]


def parse_entry(entry_id: str, fields: dict[str, str]) -> JobEvent:
    """One stream entry as a typed event."""
    return _parse(entry_id, fields)


def read_all(client: redis.Redis, job_id: str) -> list[JobEvent]:
    """Every event of a job so far, oldest first."""
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(keys.events(job_id)))
    return [_parse(i, f) for i, f in entries]


async def follow(client: aioredis.Redis, job_id: str, after: str = "0",
                 block_ms: int = 15000) -> AsyncIterator[JobEvent | None]:
    """Yield events after ``after`` until a terminal one; yields None on each idle block (keep-alive)."""
    last = after or "0"
    while True:
        resp = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]],
                    await client.xread({keys.events(job_id): last}, count=100, block=block_ms))
        if not resp:
            yield None
            continue
        for entry_id, fields in resp[0][1]:
            last = entry_id
            event = _parse(entry_id, fields)
            yield event
            if event.type in TERMINAL_EVENTS:
                return


def sse_frame(event: JobEvent) -> str:
    """Encode one event as a Server-Sent Events frame."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(event.data, separators=(',', ':'))}\n\n"


async def wait_terminal(client: aioredis.Redis, job_id: str, timeout_s: float) -> bool:
    """Block (XREAD BLOCK, no polling) until the job's terminal event exists or ``timeout_s`` passes."""
    return await wait_all_terminal(client, [job_id], timeout_s)


async def wait_all_terminal(client: aioredis.Redis, job_ids: list[str], timeout_s: float) -> bool:
    """Block until every job has its terminal event (True) or ``timeout_s`` passes (False).

    Starts from each stream's last entry: a terminal event is always the last one, so finished jobs answer at
    once; the rest are followed by one XREAD over all their streams, which wakes the moment any of them
    appends an event.
    """
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.xrevrange(keys.events(job_id), count=1)
    cursors: dict[str, str] = {}
    for job_id, last in zip(job_ids, await pipe.execute()):
        if not (last and last[0][1].get("type") in TERMINAL_EVENTS):
            cursors[keys.events(job_id)] = last[0][0] if last else "0"
    deadline = time.monotonic() + timeout_s
    while cursors and (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
        resp = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]],
                    await client.xread(cursors, count=100, block=left_ms))  # type: ignore[arg-type]
        for key, entries in resp or []:
            for entry_id, fields in entries:
                if key not in cursors:
                    break
                cursors[key] = entry_id
                if fields.get("type") in TERMINAL_EVENTS:
                    del cursors[key]
    return not cursors
