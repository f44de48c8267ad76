"""Per-job event streams (Redis Streams): written by workers, replayed by SSE, webhooks and the CLI."""
from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from gpuq.common import keys
from gpuq.common.errors import InvalidInput
from gpuq.common.outage import OUTAGE_ERRORS, Outage
from gpuq.common.schemas import TERMINAL_EVENTS, JobEvent
from gpuq.common.settings import get_settings

log = logging.getLogger(__name__)
_STREAM_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})$")
_U64 = 2**64 - 1
Entries = list[tuple[str, dict[str, str]]]


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


def stream_id(value: str, field: str) -> tuple[int, int]:
    """``value`` as (milliseconds, sequence); 422 naming ``field`` unless it is ``0`` or ``<ms>-<seq>`` within
    Redis's 64-bit range (a larger one would fail inside Redis, after the stream's 200 went out)."""
    if value == "0":
        return 0, 0
    match = _STREAM_ID.match(value)
    if match is None or int(match[1]) > _U64 or int(match[2]) > _U64:
        raise InvalidInput(f"{field}: expected an event id like 1700000000000-0", field=field)
    return int(match[1]), int(match[2])


@dataclass
class Backlog:
    """A stream read from a resume point: the events so far, and whether the job's terminal event is among
    them or at or before the resume point (then there is nothing more to follow)."""

    events: list[JobEvent]
    finished: bool
    last: str


async def backlog(client: aioredis.Redis, job_id: str, after: str, field: str = "Last-Event-ID") -> Backlog:
    """Every event after ``after`` (up to the terminal one); 422 naming ``field`` for an id this stream never
    issued (malformed, out of range, or later than its last event). Read before a response starts, so a Redis
    error is a clean 503, never a stream cut off after its 200."""
    start = stream_id(after, field)
    key = keys.events(job_id)
    entries = cast(Entries, await client.xrange(key, min=f"({after}" if start != (0, 0) else "-"))
    events = []
    for entry_id, fields in entries:
        events.append(_parse(entry_id, fields))
        if events[-1].type in TERMINAL_EVENTS:
            return Backlog(events, True, entry_id)
    if events or start == (0, 0):
        return Backlog(events, False, events[-1].id if events else after)
    tail = cast(Entries, await client.xrevrange(key, count=16))  # newest first
    if not tail or stream_id(tail[0][0], field) < start:
        raise InvalidInput(f"{field}: {after} is later than this job's last event", field=field)
    finished = any(f.get("type") in TERMINAL_EVENTS and stream_id(i, field) <= start for i, f in tail)
    return Backlog([], finished, after)


async def follow(client: aioredis.Redis, job_id: str, after: str = "0",
                 block_ms: int = 15000) -> AsyncIterator[JobEvent | None]:
    """Yield events after ``after`` until a terminal one; yields None on each idle block (keep-alive).

    A Redis outage does not end the stream: it yields keep-alives while it retries, and goes on from the
    last event it yielded once Redis is back.
    """
    last = after or "0"
    outage = Outage(f"event stream of job {job_id}", log, cap_s=min(2.0, block_ms / 1000), level=logging.DEBUG)
    while True:
        try:
            resp = cast(list[tuple[str, Entries]],
                        await client.xread({keys.events(job_id): last}, count=100, block=block_ms))
            outage.ok()
        except OUTAGE_ERRORS as exc:
            await outage.pause(exc)
            yield None
            continue
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
