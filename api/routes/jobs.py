"""Job routes: submit, read, list, stream events, cancel, artifacts."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from redis.exceptions import RedisError

from api import queue
from api.deps import Artifacts, Jobs, SettingsDep, Tenant
from common import events, stats
from common.errors import InvalidInput, ServiceUnavailable
from common.jobs.registry import Submitter, get_spec
from common.records import body_hash
from common.redis_client import get_async_redis
from common.schemas import ArtifactInfo, JobList, JobRecord, JobRequest, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
deadletter_router = APIRouter(prefix="/v1/deadletter", tags=["jobs"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


@router.post("", status_code=202, response_model=JobRecord)
def submit_job(body: JobRequest, tenant: Tenant, jobs: Jobs, settings: SettingsDep,
               idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Validate a job against its kind, store its record and enqueue it (202)."""
    spec = get_spec(body.kind)
    valid = spec.validate(body.model, body.inputs, body.params, Submitter(tenant, settings))
    job_id = uuid.uuid4().hex
    fields: dict[str, Any] = {
        "id": job_id, "tenant": tenant, "kind": spec.kind, "model": valid.model, "queue": spec.queue,
        "priority": body.priority, "status": "queued", "inputs": valid.inputs, "params": valid.params,
        "attempts": 0, "cancel_requested": 0, "timings": {"submitted_at": time.time()},
    }
    try:
        existing = jobs.create(fields, idempotency_key, body_hash(body.model_dump(mode="json")))
        if existing is not None:
            return JSONResponse(jobs.get(existing, tenant).model_dump(mode="json"), status_code=200,
                                headers={"Idempotent-Replayed": "true", "Location": f"/v1/jobs/{existing}"})
        try:
            queue.publish(job_id, spec, body.priority)
        except ServiceUnavailable:
            jobs.delete(job_id, tenant, idempotency_key)
            raise
        stats.count_submitted(jobs.r, spec.kind)
        record = jobs.get(job_id, tenant)
    except RedisError as exc:
        raise ServiceUnavailable(f"job store unavailable: {type(exc).__name__}") from exc
    return JSONResponse(record.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/jobs/{job_id}"})


@router.get("", response_model=JobList)
def list_jobs(tenant: Tenant, jobs: Jobs, settings: SettingsDep, status: JobStatus | None = None,
              kind: str | None = Query(None, max_length=64),
              limit: int = Query(50, ge=1, le=500)) -> JobList:
    """The caller's jobs, newest first."""
    return JobList(jobs=jobs.list(tenant, min(limit, settings.max_list_limit), status, kind))


@router.get("/{job_id}", response_model=JobRecord)
def get_job(job_id: str, tenant: Tenant, jobs: Jobs) -> JobRecord:
    """One job's record (404 for another tenant's job)."""
    return jobs.get(job_id, tenant)


@router.post("/{job_id}/cancel", response_model=JobRecord)
def cancel_job(job_id: str, tenant: Tenant, jobs: Jobs) -> JobRecord:
    """Cancel: a queued job never runs; a running one stops at its next progress point; 409 when done."""
    return jobs.request_cancel(job_id, tenant)


@router.get("/{job_id}/events")
def stream_events(job_id: str, tenant: Tenant, jobs: Jobs, request: Request,
                  last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
                  after: Annotated[str | None, Query(pattern=r"^\d+-\d+$")] = None) -> StreamingResponse:
    """Server-Sent Events: replay from the start (or after Last-Event-ID), end after the terminal event."""
    jobs.get(job_id, tenant)
    start = last_event_id or after or "0"
    if start != "0" and not _valid_stream_id(start):
        raise InvalidInput("Last-Event-ID must be a stream id like 1700000000000-0", field="Last-Event-ID")
    return StreamingResponse(_sse(job_id, start, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _valid_stream_id(value: str) -> bool:
    ms, sep, seq = value.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit()


async def _sse(job_id: str, start: str, request: Request) -> AsyncIterator[str]:
    client = get_async_redis()
    try:
        yield "retry: 2000\n\n"
        async for event in events.follow(client, job_id, start):
            if await request.is_disconnected():
                return
            yield ": keep-alive\n\n" if event is None else events.sse_frame(event)
    finally:
        await client.aclose()


@router.get("/{job_id}/artifacts", response_model=list[ArtifactInfo])
def list_artifacts(job_id: str, tenant: Tenant, jobs: Jobs, store: Artifacts) -> list[ArtifactInfo]:
    """The job's artifacts (names, sizes, digests)."""
    jobs.get(job_id, tenant)
    return store.list(tenant, job_id)


@router.get("/{job_id}/artifacts/{name:path}")
def download_artifact(job_id: str, name: str, tenant: Tenant, jobs: Jobs, store: Artifacts) -> FileResponse:
    """Download one artifact by name."""
    jobs.get(job_id, tenant)
    path = store.local_path(tenant, job_id, name)
    return FileResponse(path, filename=path.name)


@deadletter_router.get("", response_model=JobList)
def list_dead_letters(tenant: Tenant, jobs: Jobs, limit: int = Query(50, ge=1, le=500)) -> JobList:
    """Jobs that were failed after killing their worker too many times (the dead-letter list)."""
    return JobList(jobs=jobs.dead_letters(tenant, limit))
