"""Job routes: submit, read, list, stream events, cancel, artifacts."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response, StreamingResponse

from gpuq.api import bulk, intake, waiting
from gpuq.api.auth import tenant_for
from gpuq.api.body import Reader, json_body
from gpuq.api.deps import Artifacts, Jobs, SettingsDep, Tenant
from gpuq.common import events
from gpuq.common.records import answers_json
from gpuq.common.redis_client import loop_redis
from gpuq.common.schemas import (TERMINAL_STATUSES, ArtifactInfo, BulkJobRequest, JobList, JobRecord, JobRequest,
                            JobStatus)
from gpuq.common.settings import get_settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
deadletter_router = APIRouter(prefix="/v1/deadletter", tags=["jobs"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
PreferHeader = Annotated[str | None, Header(
    alias="Prefer", max_length=255, description="wait=N: answer with the finished job if done within N s")]
WaitQuery = Annotated[float | None, Query(
    ge=0, description="long-poll: wait up to N s for the job to finish (capped by GPUQ_SYNC_WAIT_MAX_S)")]


# The submit route reads its body, tenant, settings and headers itself (api/body.py says why and how).
_SUBMIT = Reader(JobRequest, ("Idempotency-Key", "Prefer"))


@router.post("", status_code=202, response_model=JobRecord, responses={
    200: {"description": "Idempotent replay, or (with ``Prefer: wait=N``) the job finished within N s"},
    429: {"description": "Tenant quota exceeded; see Retry-After"}},
    openapi_extra=_SUBMIT.openapi({"Prefer": "wait=N: answer with the finished job if done within N s"}))
async def submit_job(request: Request) -> Response:
    """Validate a job against its kind, store its record and enqueue it (202).

    ``Prefer: wait=N`` answers with the finished job (200) when it ends within N seconds (capped by
    ``GPUQ_SYNC_WAIT_MAX_S``), else with the usual 202; either way ``Preference-Applied`` says the wait used.
    """
    raw = await json_body(request)
    tenant, settings = tenant_for(request), get_settings()
    body, headers_in = _SUBMIT.read(request, raw)
    idempotency_key, prefer = headers_in["Idempotency-Key"], headers_in["Prefer"]
    done = await intake.accept(body, tenant, settings, idempotency_key)
    headers = {"Location": f"/v1/jobs/{done.job_id}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    wait = waiting.prefer_wait(prefer, settings)
    finished = done.status in TERMINAL_STATUSES
    if wait is not None:
        headers["Preference-Applied"] = waiting.applied(wait)
        if not finished and await waiting.until_finished(done.job_id, wait):
            answer = (await waiting.read_answers([done.job_id], tenant))[0]
            return _json(answer.json(), 200, headers)
    status = 200 if done.replayed or (wait is not None and finished) else 202
    return _json(done.json(), status, headers)


@router.post("/batch", status_code=202, response_model=JobList, responses={
    200: {"description": "Every job was an idempotent replay, or (with ``Prefer: wait=N``) all finished in N s"},
    429: {"description": "Tenant quota exceeded by the request as a whole; nothing was stored"}})
async def submit_jobs(body: BulkJobRequest, tenant: Tenant, jobs: Jobs, settings: SettingsDep,
                      idempotency_key: IdempotencyKey = None, prefer: PreferHeader = None) -> Response:
    """Submit many jobs in one request (202): each is a job of its own (record, events, result, cancel).

    All or nothing: one invalid job refuses the request (422 naming ``jobs.<i>.<field>``) and stores none.
    Jobs of a kind that runs in groups (inference) travel to the worker together, one message per
    ``GPUQ_GROUP_MAX_JOBS`` jobs of one model and priority, and share its forward passes. An
    ``Idempotency-Key`` covers the request (job ``i`` under ``<key>#<i>``): a retry replays what was
    accepted. ``Prefer: wait=N`` answers 200 with the finished jobs when all end within N seconds.
    """
    done = await run_in_threadpool(bulk.submit_many, body.jobs, tenant, jobs, settings, idempotency_key)
    ids = [d.job_id for d in done]
    headers: dict[str, str] = {}
    if all(d.replayed for d in done):
        headers["Idempotent-Replayed"] = "true"
    wait = waiting.prefer_wait(prefer, settings)
    finished = all(d.status in TERMINAL_STATUSES for d in done)
    if wait is not None:
        headers["Preference-Applied"] = waiting.applied(wait)
        if not finished and await waiting.until_all_finished(ids, wait):
            return _json(answers_json(await waiting.read_answers(ids, tenant)), 200, headers)
    status = 200 if "Idempotent-Replayed" in headers or (wait is not None and finished) else 202
    return _json(JobList(jobs=[d.record for d in done]).model_dump_json(), status, headers)


def _json(body: bytes | str, status: int, headers: dict[str, str]) -> Response:
    """A JSON answer already serialised (by pydantic-core, or spliced from stored results: results of
    hundreds of floats make a generic encoder costly)."""
    return Response(body, status_code=status, headers=headers, media_type="application/json")


@router.get("", response_model=JobList)
def list_jobs(tenant: Tenant, jobs: Jobs, settings: SettingsDep, status: JobStatus | None = None,
              kind: str | None = Query(None, max_length=64),
              limit: int = Query(50, ge=1, le=500)) -> JobList:
    """The caller's jobs, newest first."""
    return JobList(jobs=jobs.list_jobs(tenant, min(limit, settings.max_list_limit), status, kind))


@router.get("/{job_id}", response_model=JobRecord)
async def get_job(job_id: str, tenant: Tenant, jobs: Jobs, settings: SettingsDep,
                  wait: WaitQuery = None) -> JobRecord | Response:
    """One job's record (404 for another tenant's job); ``?wait=N`` returns as soon as it finishes."""
    record = await run_in_threadpool(jobs.get, job_id, tenant)
    if (wait and record.status not in TERMINAL_STATUSES
            and await waiting.until_finished(job_id, waiting.capped(wait, settings))):
        return _json((await waiting.read_answers([job_id], tenant))[0].json(), 200, {})
    return record


@router.post("/{job_id}/cancel", response_model=JobRecord)
def cancel_job(job_id: str, tenant: Tenant, jobs: Jobs) -> JobRecord:
    """Cancel: a queued job never runs; a running one stops at its next progress point; 409 when done."""
    return jobs.request_cancel(job_id, tenant)


@router.get("/{job_id}/events", responses={422: {"description": "Last-Event-ID / after is not an id of this stream"}})
async def stream_events(job_id: str, tenant: Tenant, jobs: Jobs, request: Request,
                        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
                        after: Annotated[str | None, Query(max_length=64)] = None,
                        follow: bool = True) -> StreamingResponse:
    """Server-Sent Events: replay from the start (or after Last-Event-ID), end after the terminal event.

    ``follow=false`` replays the events so far and ends at once (``gpuq logs`` without ``--follow``). A resume
    at or after the terminal event ends at once; an id this stream never issued is a 422. Everything up to
    now is read before the response starts, so a Redis error is a 503, never a stream cut off after its 200;
    a Redis outage while following sends keep-alives until Redis returns.
    """
    await run_in_threadpool(jobs.get, job_id, tenant)
    field = "Last-Event-ID" if last_event_id else "after"
    start = await events.backlog(loop_redis(), job_id, last_event_id or after or "0", field)
    return StreamingResponse(_sse(job_id, start, request, follow), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(job_id: str, start: events.Backlog, request: Request, follow: bool) -> AsyncIterator[str]:
    if follow:
        yield "retry: 2000\n\n"
    for event in start.events:
        yield events.sse_frame(event)
    if start.finished or not follow:
        return
    async for found in events.follow(loop_redis(), job_id, start.last):
        if await request.is_disconnected():
            return
        yield ": keep-alive\n\n" if found is None else events.sse_frame(found)


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
