"""Runs one job end to end: claim it under a lease, call its handler, hand what it returned or raised to
``outcome`` (which decides and writes how the job ends).

Celery tasks call ``run_job``. Delivery is at-least-once (acks late); the lease and the record's atomic
status transitions make execution effectively once: a duplicate delivery of a job that a live worker is
running is dropped, and only one terminal transition (one ``completed``/``failed`` event) can ever happen.
"""
from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pydantic import ValidationError

from gpuq.common import keys, stats
from gpuq.common.jobs.registry import get_spec
from gpuq.common.records import JobStore, decode_raw
from gpuq.common.schemas import TERMINAL_STATUSES
from gpuq.common.settings import get_settings
from gpuq.worker import outcome, telemetry
from gpuq.worker.context import JobContext, now
from gpuq.worker.handlers import get_handler
from gpuq.worker.identity import node_name, worker_id
from gpuq.worker.jobstore import artifact_store, job_store
from gpuq.worker.lease import Lease
from gpuq.worker.taskevents import ProgressEvents
from gpuq.worker.watchdog import get_watchdog

log = logging.getLogger(__name__)
Limits = tuple[float, float | None]  # (soft, hard) seconds


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
            return _dropped(jobs, job_id, node, "missing")
        log.info("job %s is already %s; not running it again", job_id, raw["status"])
        return _dropped(jobs, job_id, node, str(raw["status"]))
    if not leased:
        log.warning("job %s is leased by a live worker; dropping duplicate delivery", job_id)
        # Running here already (a second delivery to this worker) it stays listed; elsewhere, it is not ours.
        return "duplicate" if raw.get("node") == node else _dropped(jobs, job_id, node, "duplicate")
    try:
        ctx = _claim(jobs, raw, node)
        if ctx is None:
            return str((jobs.get_raw(job_id) or {}).get("status"))
        status = _execute(jobs, ctx, raw, limits)
        if status in TERMINAL_STATUSES:  # its outcome's script dropped the lease
            lease.forget()
        return status
    finally:
        lease.release()  # still held: not claimed, handed back, retried, or superseded


def _dropped(jobs: JobStore, job_id: str, node: str, why: str) -> str:
    """A delivery this worker will not run is no longer its job (it was listed on receipt)."""
    jobs.r.srem(keys.worker_jobs(node), job_id)
    return why


def _claim(jobs: JobStore, raw: dict[str, Any], node: str) -> JobContext | None:
    """Move queued (or redelivered running) -> running; fail it when it has killed workers too often."""
    settings = get_settings()
    spec = get_spec(raw["kind"])
    attempts = int(raw.get("attempts") or 0) + 1
    timings = dict(raw.get("timings") or {})
    if attempts > spec.max_attempts:
        outcome.give_up(jobs, raw, attempts, spec.max_attempts)
        return None
    try:
        params = spec.load_params(raw.get("params") or {})
    except ValidationError as exc:
        outcome.unreadable(jobs, raw, _first_error(exc))
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
        outcome.unlist(pipe, raw["id"], raw["queue"], node)
        pipe.execute()
        return None
    return make_context(jobs, raw, node, timings, attempts,
                        on_progress=ProgressEvents(settings.task_event_progress_interval_s), params=params)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "params"
    return f"{where}: {first.get('msg')}"


def make_context(jobs: JobStore, raw: dict[str, Any], node: str, timings: dict[str, Any], attempt: int,
                 on_progress: Any = None, params: Any = None) -> JobContext:
    """The handler's view of a claimed job (``raw`` is its record as read before the claim; ``params`` its
    params already validated, else validated here)."""
    store = artifact_store()
    # A redelivered job keeps what its earlier attempts stored (checkpoints a resume starts from).
    earlier = store.list(raw["tenant"], raw["id"]) if attempt > 1 else []
    return JobContext(
        job_id=raw["id"], tenant=raw["tenant"], kind=raw["kind"], model=raw["model"], inputs=raw.get("inputs"),
        params=params if params is not None else get_spec(raw["kind"]).load_params(raw.get("params") or {}), settings=get_settings(), redis=jobs.r,
        jobs=jobs,
        store=store, artifacts=earlier, model_load_ms=0.0, timings=timings,
        resolved=dict(raw.get("resolved") or {}), attempt=attempt, node=node, on_progress=on_progress,
        fenced=True,  # its writes carry the attempt: a late one from a lapsed lease never lands
    )


def _guard(ctx: JobContext, queue: str, limits: Limits | None) -> AbstractContextManager[Any]:
    if limits is None:
        return nullcontext()
    ctx.deadline = time.monotonic() + limits[0]
    return get_watchdog().watch(ctx.job_id, queue, *limits)


def _execute(jobs: JobStore, ctx: JobContext, raw: dict[str, Any], limits: Limits | None = None) -> str:
    """Run the handler and settle its outcome: the terminal write, the lease's release and the job's telemetry
    in one round trip."""
    begin = time.perf_counter(), time.process_time()
    result: Any
    try:
        with _guard(ctx, raw["queue"], limits):
            try:
                result = get_handler(ctx.kind).run(ctx)
            finally:
                ctx.close_progress()  # queued progress is written before the outcome: it ends the stream
    except Exception as exc:  # noqa: BLE001 - every failure has its outcome; the worker keeps serving
        result = exc
    run_s = time.perf_counter() - begin[0] - ctx.model_load_ms / 1000

    def ended(pipe: Any, outcomes: list[tuple[str, str]]) -> None:
        telemetry.queue_jobs_done(pipe, ctx.kind, [(status, run_s) for _, status in outcomes])

    return outcome.settle(jobs, [ctx], [result], {ctx.job_id: raw}, begin, release=True,
                          ended=ended)[ctx.job_id]
