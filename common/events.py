"""Per-job event streams (Redis Streams): written by workers, replayed by SSE, webhooks and the CLI."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from gpuq.common import keys
from gpuq.common.schemas import TERMINAL_EVENTS, JobEvent
from gpuq.common.settings import get_settings


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
