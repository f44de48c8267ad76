"""``GET /generate?prompt=...`` and ``POST /generate`` (form): the seed's convenience API, through the queue.

It submits a text-generation job on ``GPUQ_GENERATE_MODEL`` like any other (same validation, quotas and
worker), waits for it without polling, and answers ``{"result": generated_text}``.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from gpuq.api import intake, waiting
from gpuq.api.deps import Jobs, SettingsDep, Tenant
from gpuq.common.errors import InvalidInput, NotConfigured, UpstreamJobFailed, WaitTimeout
from gpuq.common.records import JobStore
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import Settings

router = APIRouter(tags=["generate"])
SETTING = "GPUQ_GENERATE_MODEL"
NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    503: {"description": f"no usable model is configured for /generate ({SETTING})"}}
Prompt = Annotated[str, Query(min_length=1, max_length=100_000, description="text to continue")]


@router.get("/generate", responses={504: {"description": "not finished in time; the job goes on"},
                                    **NOT_CONFIGURED})
async def generate_get(prompt: Prompt, tenant: Tenant, jobs: Jobs, settings: SettingsDep) -> JSONResponse:
    """Generate a continuation of ``prompt`` with the default model: ``{"result": generated_text}``."""
    return await _generate(prompt, tenant, jobs, settings)


@router.post("/generate", responses={504: {"description": "not finished in time; the job goes on"},
                                     **NOT_CONFIGURED})
async def generate_post(prompt: Annotated[str, Form(min_length=1, max_length=100_000)], tenant: Tenant,
                        jobs: Jobs, settings: SettingsDep) -> JSONResponse:
    """The same as ``GET /generate``, with ``prompt`` as a form field."""
    return await _generate(prompt, tenant, jobs, settings)


async def _generate(prompt: str, tenant: str, jobs: JobStore, settings: Settings) -> JSONResponse:
    if not settings.generate_model:
        raise NotConfigured(f"/generate is not configured on this deployment (set {SETTING})", field=SETTING)
    body = JobRequest(kind="inference", model=settings.generate_model, inputs=prompt,
                      params={"task": "text-generation", "max_new_tokens": settings.generate_max_new_tokens})
    try:
        done = await intake.accept(body, tenant, settings)
    except InvalidInput as exc:
        if exc.field != "model":
            raise
        # The deployment's model, not the caller's request: say which setting names nothing usable.
        raise NotConfigured(f"/generate cannot run: {SETTING} {exc.message.removeprefix('model: ')}",
                            field=SETTING) from None
    job_id = done.job_id
    headers = {"Location": f"/v1/jobs/{job_id}", "X-Gpuq-Job-Id": job_id}
    timeout = waiting.capped(settings.generate_timeout_s, settings)
    if not await waiting.until_finished(job_id, timeout):
        raise WaitTimeout(f"generation did not finish within {timeout:g} s; the job goes on: "
                          f"GET /v1/jobs/{job_id}", job_id=job_id)
    record = await run_in_threadpool(jobs.get, job_id, tenant)
    if record.status != "succeeded":
        why = record.error.message if record.error else record.status
        raise UpstreamJobFailed(f"generation job {job_id} {record.status}: {why}", job_id=job_id)
    return JSONResponse({"result": record.result["generated_text"]}, headers=headers)
