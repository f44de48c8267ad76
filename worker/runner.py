"""Runs one job end to end: claim it, call its handler, record the outcome. Celery tasks call this.

Two Redis round trips of gpuq's own per job: one script claims the job and returns its record, another writes
the terminal state, its event, the running/held indexes and the done announcement.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from typing import Any

import orjson

from common.errors import GpuqError, JobCancelled, JobError, JobTimeout, ResourceExhausted, WorkerLost
from common.jobs.registry import all_specs
from common.records import JobStore
from common.redis_client import get_redis
from common.settings import get_settings
from common.storage import ArtifactStore, get_store
from worker.context import JobContext, now
from worker.handlers import get_handler
from worker.models import get_cache, release_memory

log = logging.getLogger(__name__)
RESULT_ARTIFACT = "result.json"
Limits = tuple[float, float | None]  # (soft, hard) seconds
_EVENT_FOR = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}


def node_name() -> str:
    """This worker's node name (inherited by pool children), which heartbeats, queues and held jobs use."""
    return os.environ.get("GPUQ_WORKER_NAME") or socket.gethostname()


def worker_id() -> str:
    """Identity recorded on the job: the Celery node name plus the pid."""
    return f"{node_name()}:{os.getpid()}"


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    """One store (and its registered scripts) per process."""
    return JobStore(get_redis())


@lru_cache(maxsize=1)
def _max_attempts() -> dict[str, int]:
    return {spec.kind: spec.max_attempts for spec in all_specs()}


def run_job(job_id: str, limits: Limits | None = None) -> str:
    """Execute a job by id; returns its final (or current) status. Safe to call again on redelivery.

    ``limits`` (soft, hard seconds) arm the watchdog (threads pool, where Celery enforces no time limit).
    """
    jobs = job_store()
    node = node_name()
    claim = jobs.claim(job_id, node, worker_id(), _max_attempts())
    if claim.outcome == "missing":
        log.warning("job %s has no record (expired or never created); dropping message", job_id)
        return "missing"
    if claim.outcome in ("terminal", "busy"):
        log.info("job %s is %s; not running it again", job_id,
                 claim.detail if claim.outcome == "terminal" else f"running on live worker {claim.detail}")
        return claim.detail if claim.outcome == "terminal" else "running"
    raw = claim.record
    assert raw is not None
    if claim.outcome == "exhausted":
        return finish(jobs, job_id, raw["queue"], "failed", dict(raw.get("timings") or {}), node=node,
                      error=WorkerLost(f"job was interrupted {int(raw.get('attempts') or 0)} times "
                                       "(worker lost each time); giving up").to_dict())
    ctx = _context(jobs, raw, node)
    return _execute(jobs, ctx, raw["queue"], limits)


@lru_cache(maxsize=1)
def _store() -> ArtifactStore:
    return get_store(get_settings().artifact_dir)  # resolving the root is a syscall: once per process


def _context(jobs: JobStore, raw: dict[str, Any], node: str) -> JobContext:
    settings = get_settings()
    return JobContext(
        job_id=raw["id"], tenant=raw["tenant"], kind=raw["kind"], model=raw["model"],
        inputs=raw.get("inputs"), params=raw.get("params") or {}, settings=settings, redis=jobs.r, jobs=jobs,
        store=_store(), models=get_cache(),
        artifacts=[], model_load_ms=0.0, timings=dict(raw.get("timings") or {}), node=node,
    )


def _guard(ctx: JobContext, queue: str, limits: Limits | None) -> AbstractContextManager[Any]:
    if limits is None:
        return nullcontext()
    from worker.watchdog import get_watchdog

    ctx.deadline = time.monotonic() + limits[0]
    return get_watchdog().watch(ctx.job_id, queue, *limits)


def _execute(jobs: JobStore, ctx: JobContext, queue: str, limits: Limits | None) -> str:
    begin = time.perf_counter()
    try:
        with _guard(ctx, queue, limits):
            result = get_handler(ctx.kind).run(ctx)
        encoded = _encode_result(ctx, result)
    except JobCancelled as exc:
        return finish(jobs, ctx.job_id, queue, "cancelled", _timed(ctx, begin), node=ctx.node,
                      event_data={"reason": exc.message})
    except Exception as exc:  # noqa: BLE001 - every failure is recorded; the worker keeps serving
        error = classify(exc)
        log.warning("job %s failed: %s: %s", ctx.job_id, error.type_name, error.message)
        if isinstance(error, ResourceExhausted):
            release_memory()
        return finish(jobs, ctx.job_id, queue, "failed", _timed(ctx, begin), node=ctx.node,
                      error=error.to_dict(), extra=ctx.record_fields)
    return finish(jobs, ctx.job_id, queue, "succeeded", _timed(ctx, begin), node=ctx.node, result=encoded,
                  extra=ctx.record_fields)


def _timed(ctx: JobContext, begin: float) -> dict[str, Any]:
    elapsed = (time.perf_counter() - begin) * 1000
    return {**ctx.timings, "finished_at": now(), "model_load_ms": round(ctx.model_load_ms, 3),
            "run_ms": round(max(elapsed - ctx.model_load_ms, 0.0), 3)}


def _encode_result(ctx: JobContext, result: Any) -> str:
    """The result as JSON text, encoded once; a large one is stored as an artifact and referenced instead."""
    try:
        encoded = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # a type orjson does not know; the standard encoder may
        encoded = json.dumps(result, separators=(",", ":"))
    if len(encoded) <= ctx.settings.result_inline_max_bytes:
        return encoded
    info = ctx.put_artifact(RESULT_ARTIFACT, encoded.encode())
    return json.dumps({"artifact": info.name, "bytes": info.size, "sha256": info.sha256})


def finish(jobs: JobStore, job_id: str, queue: str, status: str, timings: dict[str, Any],
           result: str | None = None, error: dict[str, Any] | None = None,
           event_data: dict[str, Any] | None = None, node: str | None = None,
           extra: dict[str, Any] | None = None) -> str:
    """Write the terminal state and its event in one atomic step (``result`` is JSON text)."""
    fields: dict[str, Any] = {**(extra or {}), "status": status, "timings": timings}
    data: dict[str, Any] = dict(event_data or {})
    if status == "succeeded":
        data["result_ref"] = f"/v1/jobs/{job_id}"
    if error is not None:
        fields["error"] = error
        data["error"] = error
    jobs.finish(job_id, queue, node, fields, _EVENT_FOR[status], data, result_json=result)
    return status


def classify(exc: BaseException) -> GpuqError:
    """Map any exception to gpuq's error tree (OOM and time limits get their own types)."""
    if isinstance(exc, GpuqError):
        return exc
    name = type(exc).__name__
    if name == "SoftTimeLimitExceeded":
        return JobTimeout("job exceeded its time limit")
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return ResourceExhausted(f"out of memory: {str(exc)[:300]}")
    return JobError(f"{name}: {str(exc)[:500]}")
