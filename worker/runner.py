"""Runs one job end to end: claim it under a lease, call its handler, record the outcome.

Celery tasks call ``run_job``. Delivery is at-least-once (acks late); the lease and the record's atomic
status transitions make execution effectively once: a duplicate delivery of a job that a live worker is
running is dropped, and only one terminal transition (one ``completed``/``failed`` event) can ever happen.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache, partial
from typing import Any

import redis

from gpuq.common import dispatch, keys, stats
from gpuq.common.errors import (GpuqError, JobCancelled, JobError, JobInterrupted, JobTimeout, ResourceExhausted,
                           WorkerLost)
from gpuq.common.jobs.registry import get_spec
from gpuq.common.records import JobStore, decode_raw, json_text
from gpuq.common.redis_client import get_redis
from gpuq.common.schemas import TERMINAL_STATUSES
from gpuq.common.settings import get_settings
from gpuq.common.storage import ArtifactStore, get_store
from gpuq.worker import telemetry
from gpuq.worker.context import JobContext, now
from gpuq.worker.handlers import get_handler
from gpuq.worker.lease import Lease
from gpuq.worker.models import release_memory
from gpuq.worker.taskevents import ProgressEvents

log = logging.getLogger(__name__)
RESULT_ARTIFACT = "result.json"
Limits = tuple[float, float | None]  # (soft, hard) seconds
_EVENT_FOR = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}


def node_name() -> str:
    """This worker's node name (inherited by pool children), which heartbeats, queues and held jobs use."""
    return os.environ.get("GPUQ_WORKER_NAME") or socket.gethostname()


class Requeue(Exception):
    """Raised to the task layer: give the message back to the broker at once."""


def worker_id() -> str:
    """Identity recorded on the job: the Celery node name plus the pid."""
    return f"{node_name()}:{os.getpid()}"


@lru_cache(maxsize=1)
def _store() -> ArtifactStore:
    return get_store(get_settings().artifact_dir)  # resolving the root is a syscall: once per process


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    """One store (and its registered scripts) per process."""
    return JobStore(get_redis())


def run_job(job_id: str, limits: Limits | None = None) -> str:
    """Execute a job by id; returns its final (or current) status. Safe to call again on redelivery.

    ``limits`` (soft, hard seconds) arm the watchdog (threads pool, where Celery enforces no time limit).
    """
    jobs = job_store()
    node = node_name()
    lease = Lease(jobs.r, job_id, worker_id(), get_settings().lease_ttl_s)
    # The record is read in the lease's round trip; a lease taken for a job that is not to run is given back.
    leased, found = lease.acquire_reading(lambda pipe: jobs.get_raw(job_id, pipe))
    raw = decode_raw(found)
    if raw is None or raw["status"] in TERMINAL_STATUSES:
        if leased:
            lease.release()
        if raw is None:
            log.warning("job %s has no record (expired or never created); dropping message", job_id)
            return "missing"
        log.info("job %s is already %s; not running it again", job_id, raw["status"])
        return str(raw["status"])
    if not leased:
        log.warning("job %s is leased by a live worker; dropping duplicate delivery", job_id)
        return "duplicate"
    done: Any = None  # the job's telemetry, sent in the lease release's round trip
    try:
        ctx = _claim(jobs, raw, node)
        if ctx is None:
            return str((jobs.get_raw(job_id) or {}).get("status"))
        begin = time.perf_counter()
        status = _execute(jobs, ctx, raw, limits)
        run_s = time.perf_counter() - begin - ctx.model_load_ms / 1000
        done = partial(telemetry.queue_jobs_done, kind=ctx.kind, outcomes=[(status, run_s)])
        return status
    finally:
        lease.release(after=done)


def _claim(jobs: JobStore, raw: dict[str, Any], node: str) -> JobContext | None:
    """Move queued (or redelivered running) -> running; fail it when it has killed workers too often."""
    settings = get_settings()
    spec = get_spec(raw["kind"])
    attempts = int(raw.get("attempts") or 0) + 1
    timings = dict(raw.get("timings") or {})
    if attempts > spec.max_attempts:
        error = WorkerLost(f"job was interrupted {attempts - 1} times (its worker died each time); giving up "
                           f"after max_attempts={spec.max_attempts}")
        if finish(jobs, raw["id"], raw["queue"], "failed", {**timings, "finished_at": now()},
                  error=error.to_dict()) == "failed":
            jobs.r.zadd(keys.deadletter(), {raw["id"]: now()})
        return None
    started = now()
    timings.update(started_at=started, queue_wait_ms=round((started - timings["submitted_at"]) * 1000, 3))
    fields = {"status": "running", "worker": worker_id(), "node": node, "attempts": attempts, "timings": timings}

    def listed(pipe: Any) -> None:  # sent with the claim, in its round trip; taken back if it was refused
        pipe.zadd(keys.running(raw["queue"]), {raw["id"]: started})
        pipe.sadd(keys.worker_jobs(node), raw["id"])  # what the reaper recovers if this worker dies
        stats.wait_histogram(raw["queue"]).observe(pipe, timings["queue_wait_ms"] / 1000)

    claim = jobs.transition(raw["id"], ["queued", "running"], fields, "started",
                            {"worker": fields["worker"], "attempt": attempts}, after=listed)
    if not claim.applied:  # ended (a cancel) between the read and the claim; its wait stays observed
        pipe = jobs.r.pipeline(transaction=False)
        unlist(pipe, raw["id"], raw["queue"], node)
        pipe.execute()
        return None
    return make_context(jobs, raw, node, timings, attempts,
                        on_progress=ProgressEvents(settings.task_event_progress_interval_s))


def make_context(jobs: JobStore, raw: dict[str, Any], node: str, timings: dict[str, Any], attempt: int,
                 on_progress: Any = None) -> JobContext:
    """The handler's view of a claimed job (``raw`` is its record as read before the claim)."""
    store = _store()
    # A redelivered job keeps what its earlier attempts stored (checkpoints a resume starts from).
    earlier = store.list(raw["tenant"], raw["id"]) if attempt > 1 else []
    return JobContext(
        job_id=raw["id"], tenant=raw["tenant"], kind=raw["kind"], model=raw["model"], inputs=raw.get("inputs"),
        params=raw.get("params") or {}, settings=get_settings(), redis=jobs.r, jobs=jobs,
        store=store, artifacts=earlier, model_load_ms=0.0, timings=timings,
        resolved=dict(raw.get("resolved") or {}), attempt=attempt, node=node, on_progress=on_progress,
    )


def _guard(ctx: JobContext, queue: str, limits: Limits | None) -> AbstractContextManager[Any]:
    if limits is None:
        return nullcontext()
    from gpuq.worker.watchdog import get_watchdog

    ctx.deadline = time.monotonic() + limits[0]
    return get_watchdog().watch(ctx.job_id, queue, *limits)


def _execute(jobs: JobStore, ctx: JobContext, raw: dict[str, Any], limits: Limits | None = None) -> str:
    begin = time.perf_counter(), time.process_time()
    try:
        with _guard(ctx, raw["queue"], limits):
            try:
                result = get_handler(ctx.kind).run(ctx)
            finally:
                ctx.close_progress()  # queued progress is written before the outcome: it ends the stream
        encoded = encode_result(ctx, result)
    except JobCancelled as exc:
        return finish(jobs, ctx.job_id, raw["queue"], "cancelled", timed(ctx, begin), node=ctx.node,
                      event_data={"reason": exc.message})
    except JobInterrupted as exc:
        return hand_back(jobs, ctx, raw, exc.message)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis went away under the job: that is not the job's failure. Hand it back (or, if Redis is still
        # down, let the broker requeue it; failing both, the sweeper requeues it once its lease expires).
        log.warning("job %s lost Redis (%s); handing it back", ctx.job_id, exc)
        try:
            return hand_back(jobs, ctx, raw, "job store unreachable")
        except redis.RedisError:
            raise Requeue("job store unreachable") from None
    except Exception as exc:  # noqa: BLE001 - every failure is recorded; the worker keeps serving
        error = classify(exc)
        log.warning("job %s failed: %s: %s", ctx.job_id, error.type_name, error.message)
    else:
        return finish(jobs, ctx.job_id, raw["queue"], "succeeded", timed(ctx, begin), node=ctx.node,
                      result=encoded, extra=ctx.record_fields)
    # Outside the except block: the traceback (and every frame's tensors) is gone before memory is released.
    release_memory()
    return finish(jobs, ctx.job_id, raw["queue"], "failed", timed(ctx, begin), node=ctx.node,
                  error=error.to_dict(), extra=ctx.record_fields)


def hand_back(jobs: JobStore, ctx: JobContext, raw: dict[str, Any], why: str) -> str:
    """Give an interrupted job back: running -> queued, and publish it again right away.

    Rejecting the message would also requeue it, but Celery's main process sits in its soft-shutdown
    wait until the window ends, so the reject (and the requeue) would only happen then. Publishing a
    fresh message lets another worker start within milliseconds; the original message is acked when the
    parent catches up, and if it is restored instead, the claim logic drops it as a duplicate.
    """
    from gpuq.worker.celery_app import app

    jobs.transition(ctx.job_id, ["running"], {"status": "queued"}, "log",
                    {"message": f"{why}; returned to the queue", "progress": ctx.last_progress})
    jobs.r.zrem(keys.running(raw["queue"]), ctx.job_id)
    jobs.r.srem(keys.worker_jobs(ctx.node), ctx.job_id)
    jobs.r.delete(keys.lease(ctx.job_id))  # before publishing, or the next worker would see it held
    try:
        dispatch.publish(app, ctx.job_id, get_spec(ctx.kind), raw.get("priority") or "normal")
    except GpuqError:
        raise Requeue(why) from None
    return "requeued"


def timed(ctx: JobContext, begin: tuple[float, float]) -> dict[str, Any]:
    """Timings at the end: ``begin`` is (perf_counter, process_time) when the job started running."""
    elapsed = (time.perf_counter() - begin[0]) * 1000
    # CPU time of the whole process while the job ran (its threads and gpuq's background threads): the
    # job's own cost on a prefork worker, which runs one job at a time; a share of the total on threads.
    cpu_ms = (time.process_time() - begin[1]) * 1000
    return {**ctx.timings, "finished_at": now(), "model_load_ms": round(ctx.model_load_ms, 3),
            "run_ms": round(max(elapsed - ctx.model_load_ms, 0.0), 3), "progress_ms": round(ctx.progress_ms, 3),
            "cpu_ms": round(cpu_ms, 3)}


def encode_result(ctx: JobContext, result: Any) -> str:
    """The result as JSON text, encoded once; a large one is stored as an artifact and referenced instead."""
    encoded = json_text(result)
    if len(encoded) <= ctx.settings.result_inline_max_bytes:
        return encoded
    info = ctx.put_artifact(RESULT_ARTIFACT, encoded.encode())
    return json.dumps({"artifact": info.name, "bytes": info.size, "sha256": info.sha256})


def finish(jobs: JobStore, job_id: str, queue: str, status: str, timings: dict[str, Any],
           result: str | None = None, error: dict[str, Any] | None = None,
           event_data: dict[str, Any] | None = None, node: str | None = None,
           extra: dict[str, Any] | None = None) -> str:
    """Write the terminal state and its event in one atomic step (``result`` is JSON text); a second attempt
    is a no-op."""
    _, allowed, fields, event, data, encoded = terminal_change(job_id, status, timings, result, error, event_data,
                                                                extra)
    done = jobs.transition(job_id, allowed, fields, event, data, encoded=encoded,
                           after=lambda pipe: unlist(pipe, job_id, queue, node))  # one round trip
    return status if done.applied else str(done.previous)


Change = tuple[str, list[str], dict[str, Any], str, dict[str, Any], dict[str, str] | None]


def terminal_change(job_id: str, status: str, timings: dict[str, Any], result: str | None = None,
                    error: dict[str, Any] | None = None, event_data: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Change:
    """The record transition (``JobStore.transition_many`` form) that ends a job with ``status``."""
    fields: dict[str, Any] = {**(extra or {}), "status": status, "timings": timings}
    data: dict[str, Any] = dict(event_data or {})
    if status == "succeeded":
        data["result_ref"] = f"/v1/jobs/{job_id}"
    if error is not None:
        fields["error"] = error
        data["error"] = error
    return (job_id, ["queued", "running"], fields, _EVENT_FOR[status], data,
            {"result": result} if result is not None else None)


def unlist(pipe: Any, job_id: str, queue: str, node: str | None) -> None:
    """Queue the commands that take a finished job off its queue's running set and its worker's job set."""
    pipe.zrem(keys.running(queue), job_id)
    if node:
        pipe.srem(keys.worker_jobs(node), job_id)


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
