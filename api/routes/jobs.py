"""Job routes: submit, read, list, stream events, cancel, artifacts."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from redis.exceptions import RedisError

from api.deps import Artifacts, Jobs, SettingsDep, Tenant
from api.routing import Router
from api.waiter import WAITER
from common import events
from common.async_records import AsyncJobStore, async_job_store
from common.broker import task_message
from common.errors import InvalidInput, ServiceUnavailable
from common.jobs.registry import Submitter, get_spec
from common.records import body_hash
from common.redis_client import get_async_redis, get_redis
from common.schemas import TERMINAL_STATUSES, ArtifactInfo, JobList, JobRecord, JobRequest, JobStatus, Timings
from common.settings import Settings, get_settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
PreferHeader = Annotated[str | None, Header(alias="Prefer", max_length=255)]


@router.post("", status_code=202, response_model=JobRecord)
async def submit_job(body: JobRequest, tenant: Tenant, settings: SettingsDep,
                     idempotency_key: IdempotencyKey = None, prefer: PreferHeader = None) -> Response:
    """Validate a job against its kind, store its record and enqueue it (202).

    With ``Prefer: wait=N`` the response waits up to N seconds for the job to finish and then carries the
    final record (200); a job still running after N seconds is returned as it is (202).
    """
    wait = prefer_wait(prefer, settings)
    job_id = uuid.uuid4().hex
    future = None
    if wait:
        await WAITER.start()
        future = WAITER.register(job_id)  # before enqueueing: the job cannot finish unseen
    try:
        record, replayed = await _submit(body, tenant, settings, idempotency_key, job_id)
    except BaseException:
        if future is not None:
            WAITER.forget(job_id, future)
        raise
    if future is not None and record.id != job_id:  # an idempotent replay of an earlier job
        WAITER.forget(job_id, future)
        future = WAITER.register(record.id)
        record = await async_store().get(record.id, tenant)
    finished = record.status in TERMINAL_STATUSES
    if future is not None and not finished:
        finished = await WAITER.wait(record.id, future, wait)
    elif future is not None:
        WAITER.forget(record.id, future)
    headers = {"Location": f"/v1/jobs/{record.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if wait:
        headers["Preference-Applied"] = f"wait={wait:g}"
    code = 200 if replayed or (wait and finished) else 202
    if wait and finished:
        content = await async_store().body(record.id, tenant)
        return Response(content, status_code=code, headers=headers, media_type="application/json")
    return JSONResponse(record.model_dump(mode="json"), status_code=code, headers=headers)


def prefer_wait(prefer: str | None, settings: Settings) -> float:
    """Seconds asked for by ``Prefer: wait=N`` (RFC 7240), capped by ``GPUQ_MAX_WAIT_S``; 0 when absent."""
    for part in (prefer or "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return max(0.0, min(float(value.strip().strip('"')), settings.max_wait_s))
            except ValueError:
                raise InvalidInput("Prefer: wait=N needs a number of seconds", field="Prefer") from None
    return 0.0


async def _submit(body: JobRequest, tenant: str, settings: Settings, idempotency_key: str | None,
                  job_id: str) -> tuple[JobRecord, bool]:
    """Store the record and enqueue its message in one step; (record, whether it replays an earlier submit)."""
    spec = get_spec(body.kind)
    valid = spec.validate(body.model, body.inputs, body.params, Submitter(tenant, settings))
    now = time.time()
    fields: dict[str, Any] = {
        "id": job_id, "tenant": tenant, "kind": spec.kind, "model": valid.model, "queue": spec.queue,
        "priority": body.priority, "status": "queued", "inputs": valid.inputs, "params": valid.params,
        "attempts": 0, "cancel_requested": 0, "timings": {"submitted_at": now},
    }
    message = task_message(job_id, spec, body.priority, affinity_router().route(spec, valid.model), settings)
    store = async_store()
    try:
        request_hash = body_hash(body.model_dump(mode="json")) if idempotency_key else ""
        existing = await store.create(fields, idempotency_key, request_hash, message)
        if existing is not None:
            return await store.get(existing, tenant), True
    except RedisError as exc:
        raise ServiceUnavailable(f"job store unavailable: {type(exc).__name__}") from exc
    return JobRecord(id=job_id, tenant=tenant, kind=spec.kind, model=valid.model, queue=spec.queue,
                     priority=body.priority, status="queued", params=valid.params,
                     timings=Timings(submitted_at=now)), False


@lru_cache(maxsize=1)
def affinity_router() -> Router:
    """The process's affinity router."""
    return Router(get_redis(), get_settings())


@lru_cache(maxsize=1)
def async_store() -> AsyncJobStore:
    """The process's asyncio store (its pool binds to the API's event loop on first use)."""
    return async_job_store()


@router.get("", response_model=JobList)
def list_jobs(tenant: Tenant, jobs: Jobs, settings: SettingsDep, status: JobStatus | None = None,
              kind: str | None = Query(None, max_length=64),
              limit: int = Query(50, ge=1, le=500)) -> JobList:
    """The caller's jobs, newest first."""
    return JobList(jobs=jobs.list(tenant, min(limit, settings.max_list_limit), status, kind))


@router.get("/{job_id}", response_model=JobRecord)
async def get_job(job_id: str, tenant: Tenant) -> Response:
    """One job's record (404 for another tenant's job)."""
    return Response(await async_store().body(job_id, tenant), media_type="application/json")


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
