"""An OpenAI call as one gpuq job: submitted like any other (validation, quotas, affinity, ``Idempotency-Key``,
the SDK's retries finding their first attempt's job), waited for, and a job that did not succeed told the way an
OpenAI client expects. Each route family maps gpuq's field names back to its own parameters (``Params``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import orjson
from fastapi import Request
from gpuq.api import intake, waiting
from gpuq.api.deps import artifact_store
from gpuq.api.openai import retries
from gpuq.api.submission import Submitted
from gpuq.common import keys
from gpuq.common.errors import Conflict, GpuqError, InvalidInput, UpstreamJobFailed, WaitTimeout
from gpuq.common.records import JobStore, fields_from_raw
from gpuq.common.redis_client import loop_redis
from gpuq.common.schemas import TERMINAL_STATUSES, ErrorInfo, JobRecord, JobRequest, check_json_value
from gpuq.common.settings import Settings
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
Params = Callable[[str], str]  # gpuq field ("params.max_new_tokens", "inputs.0") -> OpenAI parameter


def job_request(kind: str, model: str, params: dict[str, Any], names: Params, inputs: Any = None) -> JobRequest:
    """The job an OpenAI call maps to. Built without validating ``JobRequest`` again: its model comes from the
    resolver and its params from a validated OpenAI request, so only what JobRequest checks of free-form JSON
    (nesting, lone surrogates, NaN in inputs) is checked here, 400 naming the OpenAI parameter (``names``); the
    kind's own model checks everything else at submit as for any job."""
    checks = [("inputs", inputs, True), *((f"params.{key}", value, False) for key, value in params.items())]
    for field, value, finite in checks:
        try:
            check_json_value(value, finite=finite)
        except ValueError as exc:
            raise renamed(InvalidInput(f"{field}: {exc}", field=field), names) from None
    return JobRequest.model_construct(kind=kind, model=model, inputs=inputs, params=params)


def renamed(exc: GpuqError, params: Params) -> GpuqError:
    """``exc`` naming the OpenAI parameter instead of gpuq's field."""
    if not isinstance(exc, InvalidInput) or not exc.field:
        return exc
    param = params(exc.field)
    message = param + exc.message[len(exc.field):] if exc.message.startswith(exc.field) else exc.message
    return InvalidInput(message, field=param)


async def accept(request: Request, route: str, body: JobRequest, tenant: str, settings: Settings,
                 params: Params) -> Submitted:
    """Store and enqueue the call's job, or find the one an earlier attempt of the same call made: on the event
    loop, as the native submit (api/intake.py), the SDK's retry fingerprint set in the submit's own round trip."""
    attempt = await retries.attempt_of(request, route)
    try:
        earlier = await retries.earlier_on_loop(tenant, attempt)
        if earlier is not None:
            raw = cast(dict[str, str], await loop_redis().hgetall(keys.job(earlier)))
            if raw.get("tenant") == tenant:
                return Submitted(fields_from_raw(raw, earlier, tenant), replayed=True)
        return await intake.accept(body, tenant, settings, attempt.idempotency_key,
                                   retries.pointer(tenant, attempt, settings))
    except GpuqError as exc:
        raise renamed(exc, params) from None


async def result_of(done: Submitted, tenant: str, settings: Settings, params: Params) -> tuple[JobRecord, Any]:
    """The finished job's record and result; the error an OpenAI client expects when it did not succeed."""
    job_id = done.job_id
    if done.status not in TERMINAL_STATUSES and not await waiting.until_finished(job_id, settings.openai_wait_s):
        raise WaitTimeout(f"job {job_id} did not finish within {settings.openai_wait_s:g} s; it goes on, and a "
                          "retry of this call waits for it again", job_id=job_id)
    return await finished(job_id, tenant, params)


async def finished(job_id: str, tenant: str, params: Params) -> tuple[JobRecord, Any]:
    """A terminal job's record and result (raising ``failure`` unless it succeeded)."""
    answer = (await waiting.read_answers([job_id], tenant))[0]
    if answer.record.status != "succeeded":
        raise failure(answer.record, params)
    return answer.record, stored_result(answer.record, answer.result)


def stored_result(record: JobRecord, text: str | None) -> Any:
    """A result as the worker stored it: inline, or (a large one) as the job's ``result.json`` artifact."""
    return decoded_result(record.tenant, record.id, text)


def decoded_result(tenant: str, job_id: str, text: str | None) -> Any:
    """A stored result's JSON text decoded, fetched from the job's artifacts when it was stored there."""
    value = orjson.loads(text) if text else None
    if isinstance(value, dict) and set(value) == {"artifact", "bytes", "sha256"}:
        return orjson.loads(artifact_store().local_path(tenant, job_id, str(value["artifact"])).read_bytes())
    return value


def failure(record: JobRecord, params: Params) -> GpuqError:
    """What a job that did not succeed means to an OpenAI client (never retried: the job already ran)."""
    return failure_of(record.id, record.status, record.error, params)


def failure_of(job_id: str, status: str, error: ErrorInfo | None, params: Params) -> GpuqError:
    """``failure`` from a job's id, status and error."""
    if status == "cancelled":
        return Conflict(f"job {job_id} was cancelled", field=None)
    if error is not None and error.type == "invalid_input":
        return renamed(InvalidInput(error.message, field=error.field), params)
    why = f"{error.type}: {error.message}" if error else status
    return UpstreamJobFailed(f"job {job_id} {status}: {why}", job_id=job_id)


def cancel_quietly(jobs: JobStore, job_id: str, tenant: str) -> None:
    """Cancel a job whose caller went away (already finished: nothing to do)."""
    try:
        jobs.request_cancel(job_id, tenant)
    except GpuqError:
        pass
    except RedisError as exc:  # the job goes on; nobody is left to tell
        log.warning("could not cancel job %s of a gone client: %s", job_id, exc)
