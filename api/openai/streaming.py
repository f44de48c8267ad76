"""``stream: true``: a job's event stream as OpenAI's Server-Sent Events (``data: {chunk}`` ... ``data: [DONE]``).

The route family's ``Chunks`` turns the job's ``output`` events and its result into chunks. A job that fails
mid-stream ends the stream with ``data: {"error": ...}`` (the SDK raises it). A client that goes away cancels the
job: the stream checks at each event and every second while idle, and a stream closed under it cancels on the
way out.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import StreamingResponse
from gpuq.api.openai import calls
from gpuq.api.openai.errors import error_body, openai_status
from gpuq.api.submission import Submitted
from gpuq.common import events
from gpuq.common.errors import GpuqError
from gpuq.common.records import JobStore
from gpuq.common.redis_client import loop_redis

IDLE_BLOCK_MS = 1000  # how long a read waits for an event before looking for a gone client
KEEP_ALIVE_EVERY = 15  # idle reads between keep-alive comments


class Chunks(Protocol):
    """A route family's chunks: at once, per ``output`` event, and from the finished job's result."""

    def opening(self) -> list[dict[str, Any]]:
        """Chunks sent at once, before the job's first event."""

    def output(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one ``output`` event."""

    def closing(self, result: Any) -> list[dict[str, Any]]:
        """The last chunks, from the finished job's result."""


def respond(request: Request, done: Submitted, tenant: str, jobs: JobStore, chunks: Chunks,
            params: calls.Params) -> StreamingResponse:
    """The SSE answer following ``done``'s job from its first event."""
    body = _frames(request, done.job_id, tenant, jobs, chunks, params)
    return StreamingResponse(body, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Gpuq-Job-Id": done.job_id,
        "Location": f"/v1/jobs/{done.job_id}"})


def frame(chunk: dict[str, Any]) -> str:
    """One ``data:`` frame."""
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"


async def _frames(request: Request, job_id: str, tenant: str, jobs: JobStore, chunks: Chunks,
                  params: calls.Params) -> AsyncIterator[str]:
    ended, idle = False, 0
    try:
        for chunk in chunks.opening():
            yield frame(chunk)
        async for event in events.follow(loop_redis(), job_id, "0", block_ms=IDLE_BLOCK_MS):
            if await request.is_disconnected():
                return
            if event is None:
                idle += 1
                if idle % KEEP_ALIVE_EVERY == 0:
                    yield ": keep-alive\n\n"
                continue
            if event.type == "output":
                for chunk in chunks.output(event.data):
                    yield frame(chunk)
            elif event.type in ("completed", "failed", "cancelled"):
                ended = True
                for text in await _ending(job_id, tenant, chunks, params):
                    yield text
                return
    finally:
        if not ended:
            # Blocking, but a few milliseconds: an await here would be cancelled with the stream itself.
            calls.cancel_quietly(jobs, job_id, tenant)


async def _ending(job_id: str, tenant: str, chunks: Chunks, params: calls.Params) -> list[str]:
    try:
        _, result = await calls.finished(job_id, tenant, params)
    except GpuqError as exc:
        return [frame(error_body(exc, openai_status(exc), shared=False)), "data: [DONE]\n\n"]
    return [*(frame(c) for c in chunks.closing(result)), "data: [DONE]\n\n"]
