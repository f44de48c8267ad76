"""Runs a group: one Celery message carrying several fresh jobs of one kind, model and priority.

Bulk submits (``POST /v1/jobs/batch``) publish a group message per chunk of jobs that share a kind, model,
priority and queue, instead of one message per job. On two cores a message costs about as much CPU as the
forward pass it carries (kombu's receive, unacked bookkeeping and ack; Celery's request; a lease thread; a
dozen Redis round trips), so the group does the per-job work in bulk: one round trip reads the records, one
claims them (each still gets its own ``started`` event, lease and running entry), the kind's handler runs them
together (the inference handler queues every job's chunks in the batcher before waiting for any), and
``outcome.settle`` writes every outcome in one round trip (each job's own ``completed``/``failed`` event,
result and error), deciding each exactly as for a single job: a member interrupted by shutdown or by Redis
going away is handed back, one that failed with a retryable error is retried, as the job alone would be.

Safety is the single-job runner's: the message is acknowledged after every job in it has its outcome, so a
worker lost mid-group loses nothing; the redelivered message finds those jobs running (attempts 1) and hands
each to ``gpuq.worker.runner.run_job``, whose lease check, attempts count and dead-lettering apply as for any job.
Only fresh jobs (queued, never attempted, lease free) are claimed here; anything else goes the same way.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from pydantic import ValidationError

from gpuq.common import stats
from gpuq.common.errors import JobTimeout
from gpuq.common.jobs.registry import get_spec
from gpuq.common.settings import get_settings
from gpuq.worker import outcome, telemetry
from gpuq.worker.context import JobContext, now
from gpuq.worker.handlers import get_handler
from gpuq.worker.identity import node_name, worker_id
from gpuq.worker.jobstore import job_store
from gpuq.worker.lease import Leases
from gpuq.worker.runner import Limits, make_context, run_job
from gpuq.worker.watchdog import get_watchdog

log = logging.getLogger(__name__)
# Groups that arrive together (a burst of bulk submits) take turns reading and claiming their jobs and queueing
# them in the batcher: interleaved under the GIL, every group would reach the batcher only after all of them
# had been read, and the device would wait for the first one all that time.
_INTAKE = threading.Lock()


def run_group(job_ids: list[str], limits: Limits | None = None) -> dict[str, str]:
    """Run the group's fresh jobs together and the rest one by one; returns each job's status."""
    jobs = job_store()
    node, owner = node_name(), worker_id()
    with _INTAKE:
        raws = {raw["id"]: raw for raw in jobs.get_many_raw(job_ids) if raw is not None}
        fresh = [raws[i] for i in job_ids if i in raws and raws[i]["status"] == "queued"
                 and not int(raws[i].get("attempts") or 0)]
        fresh = _readable(fresh)
        claimed = _claim(fresh, owner, node)
    statuses: dict[str, str] = {}
    if claimed:
        leases = Leases(jobs.r, [raw["id"] for raw in claimed], owner, get_settings().lease_ttl_s)
        leases.renew()
        try:
            statuses.update(_execute(claimed, node, limits))
        finally:
            leases.release()
    for job_id in job_ids:  # redeliveries, jobs leased elsewhere, finished or missing ones: the full checks
        if job_id not in statuses:
            statuses[job_id] = run_job(job_id, limits)
    return statuses


def _readable(fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fresh jobs whose stored params validate, each with them parsed (under ``_params``); any other goes
    the single-job way, which fails it before its claim."""
    readable = []
    for raw in fresh:
        try:
            raw["_params"] = get_spec(raw["kind"]).load_params(raw.get("params") or {})
        except ValidationError:
            continue
        readable.append(raw)
    return readable


def _claim(fresh: list[dict[str, Any]], owner: str, node: str) -> list[dict[str, Any]]:
    """Claim the fresh jobs in one round trip; the ones claimed, with their running timings."""
    if not fresh:
        return []
    started = now()
    claims = []
    for raw in fresh:
        timings = {**(raw.get("timings") or {}), "started_at": started}
        timings["queue_wait_ms"] = round((started - timings["submitted_at"]) * 1000, 3)
        raw["timings"] = timings
        claims.append((raw["id"], raw["queue"], {"status": "running", "worker": owner, "node": node,
                                                 "attempts": 1, "timings": timings},
                       {"worker": owner, "attempt": 1}))
    ms = int(get_settings().lease_ttl_s * 1000)
    answers = job_store().claim_fresh(claims, owner, node, ms)
    return [raw for raw, answer in zip(fresh, answers) if answer == "claimed"]


def _execute(claimed: list[dict[str, Any]], node: str, limits: Limits | None) -> dict[str, str]:
    """Run claimed jobs through their kind's handler and write every outcome in one round trip."""
    jobs = job_store()
    contexts = [make_context(jobs, raw, node, raw["timings"], 1, params=raw.pop("_params", None)) for raw in claimed]
    by_kind: dict[str, list[JobContext]] = {}
    for ctx in contexts:
        by_kind.setdefault(ctx.kind, []).append(ctx)
    begin = time.perf_counter(), time.process_time()
    outcomes: dict[str, Any] = {}
    for kind, group in by_kind.items():
        outcomes.update(zip((c.job_id for c in group), _run_kind(kind, group, limits)))
    for ctx in contexts:
        if isinstance(ctx.record_fields.get("batch"), dict):
            ctx.record_fields["batch"]["group"] = len(contexts)
    raws = {raw["id"]: raw for raw in claimed}

    def waits(pipe: Any) -> None:
        by_queue: dict[str, list[float]] = {}
        for ctx in contexts:
            by_queue.setdefault(raws[ctx.job_id]["queue"], []).append(ctx.timings["queue_wait_ms"] / 1000)
        for queue, values in by_queue.items():
            stats.wait_histogram(queue).observe_many(pipe, values)

    run_s = time.perf_counter() - begin[0]
    by_id = {ctx.job_id: ctx for ctx in contexts}

    def ended(pipe: Any, written: list[tuple[str, str]]) -> None:
        done: dict[str, list[tuple[str, float | None]]] = {}
        for job_id, status in written:
            ctx = by_id[job_id]
            done.setdefault(ctx.kind, []).append((status, run_s - ctx.model_load_ms / 1000))
        for kind, each in done.items():
            telemetry.queue_jobs_done(pipe, kind, each)

    # Every outcome and the group's telemetry in one round trip (each job's own event, result and error), as a
    # single job's would be.
    results = [outcomes[c.job_id] for c in contexts]
    return outcome.settle(jobs, contexts, results, raws, begin, after=waits, ended=ended)


def _run_kind(kind: str, contexts: list[JobContext], limits: Limits | None) -> list[Any]:
    """Each job's result or exception; a handler with ``run_many`` runs them together."""
    handler = get_handler(kind)
    many: Callable[[list[JobContext]], list[Any]] | None = getattr(handler, "run_many", None)
    with _guard(contexts, get_spec(kind).queue, limits):
        if many is not None:
            try:
                return many(contexts)
            except Exception as exc:  # noqa: BLE001 - e.g. the soft time limit landing in the group's thread
                return [exc] * len(contexts)
        outcomes: list[Any] = []
        for ctx in contexts:
            if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                # The group's time is up (the watchdog's exception lands once): the rest do not start.
                outcomes.append(JobTimeout("job exceeded its time limit (shared by the jobs of its group)"))
                continue
            try:
                outcomes.append(handler.run(ctx))
            except Exception as exc:  # noqa: BLE001
                outcomes.append(exc)
        return outcomes


def _guard(contexts: list[JobContext], queue: str, limits: Limits | None) -> Any:
    """The watchdog (threads pool) on the group as a whole: each job's limit bounds the group."""
    if limits is None:
        return nullcontext()

    deadline = time.monotonic() + limits[0]
    for ctx in contexts:
        ctx.deadline = deadline
    jobs = [c.job_id for c in contexts]
    return get_watchdog().watch(f"group:{jobs[0]}", queue, *limits, jobs=jobs)
