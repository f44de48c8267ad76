"""How a job ends: every end goes through here, decided by one policy table from what the job raised.

``decide`` maps a handler's result or exception to an action (the spirit of dramatiq's
``Retries.after_process_message``: one place decides retries):

====================================  =============================================================
nothing raised                        succeed (the result is encoded; a result that cannot be stored fails)
``AttemptSuperseded``                 drop: write nothing (a later attempt holds the job)
``JobCancelled``                      cancel
``JobInterrupted`` (shutdown)         hand back: running -> queued, published again at once
Redis lost (connection / timeout)     hand back, or the broker requeues the message if Redis is still gone
``WorkerLost`` (max_attempts at claim) dead-letter: failed, and listed in ``keys.deadletter()``
a ``retryable`` error class           retry: queued again, published with an exponential backoff
                                      (``GPUQ_RETRY_BACKOFF_S`` x 2^(attempt-1), at most
                                      ``GPUQ_RETRY_BACKOFF_MAX_S``); on the spec's last attempt, dead-letter
anything else                         fail (``classify`` names it in gpuq's error tree)
====================================  =============================================================

``settle`` applies the actions for one job or a group's jobs alike, writing every terminal outcome in one
round trip (``JobStore.transition_many``). Time limits that fire outside the job's own thread (``time_out``), worker
loss found at claim (``give_up``) and recoveries by the sweeper and the reaper (``requeue``) end here too. A
single job and a member of a group end the same way; Celery acks the message unless ``Requeue`` is raised.

A claimed attempt's outcome (its terminal change, a hand-back, a retry) is fenced by the attempt
(``records.Fence``): once the job has moved on without it (its lease lapsed while it was cut off from Redis, and
the sweeper gave the job to another worker), the write is refused inside the script, together with taking the
job off the running set and dropping the lease (by then the next attempt's), logged once and dropped; the
job's status for this attempt is then ``superseded``. Recoveries (sweeper, reaper), ``give_up`` and
``time_out`` speak for no attempt and stay unfenced.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from gpuq.common import dispatch, keys
from gpuq.common.errors import (AttemptSuperseded, GpuqError, InvalidInput, JobCancelled, JobError, JobInterrupted,
                                JobTimeout, ResourceExhausted, WorkerLost)
from gpuq.common.jobs.registry import get_spec
from gpuq.common.records import Fence, JobStore, Transition, json_text
from gpuq.common.settings import get_settings
from gpuq.worker.context import JobContext, now
from gpuq.worker.identity import worker_id
from gpuq.worker.models import release_memory

log = logging.getLogger(__name__)
RESULT_ARTIFACT = "result.json"
REDIS_LOST = (redis.ConnectionError, redis.TimeoutError)
_EVENT_FOR = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}
Change = tuple[str, list[str], dict[str, Any], str, dict[str, Any], dict[str, str] | None]

# The policy, in order: the first class that matches decides; past it, the error class's ``retryable`` does.
POLICY: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (AttemptSuperseded, "drop"),
    (JobCancelled, "cancel"),
    (JobInterrupted, "hand_back"),
    (REDIS_LOST, "hand_back"),
    (WorkerLost, "dead_letter"),
)


class Requeue(Exception):
    """Raised to the task layer: give the message back to the broker at once."""


def decide(outcome: Any, attempt: int, max_attempts: int) -> tuple[str, GpuqError | None]:
    """The action for a handler's outcome (a result, or the exception it raised) on ``attempt``."""
    if not isinstance(outcome, BaseException):
        return "succeed", None
    for cls, action in POLICY:
        if isinstance(outcome, cls):
            return action, outcome if isinstance(outcome, GpuqError) else None
    error = classify(outcome)
    if error.retryable:
        return ("retry" if attempt < max_attempts else "dead_letter"), error
    return "fail", error


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


def backoff_s(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1 after the first attempt failed) may start."""
    settings = get_settings()
    return float(min(settings.retry_backoff_s * 2 ** max(attempt - 1, 0), settings.retry_backoff_max_s))


def settle(jobs: JobStore, contexts: Sequence[JobContext], outcomes: Sequence[Any],
           raws: dict[str, dict[str, Any]], begin: tuple[float, float],
           after: Callable[[Any], None] | None = None, release: bool = False,
           ended: Callable[[Any, list[tuple[str, str]]], None] | None = None) -> dict[str, str]:
    """End claimed jobs by their outcomes; returns each job's status. Terminal outcomes (and ``after(pipe)``'s
    commands) are written in one round trip; hand-backs and retries follow, one job at a time. With
    ``release`` a terminal change also drops the attempt's lease in its script (a single job's run: its
    lease is then not released again); ``ended(pipe, [(job id, status)])`` queues, in the same round trip,
    what is counted for the terminal outcomes written (the jobs' telemetry; hand-backs and retries are counted
    when they end)."""
    changes: list[Change] = []
    later: list[tuple[JobContext, str, GpuqError | None]] = []
    dead: set[str] = set()
    for ctx, result in zip(contexts, outcomes):
        ctx.close_progress()  # queued progress is written before the outcome: it ends the stream
        change = _change(ctx, result, raws[ctx.job_id], begin, later, dead)
        if change is not None:
            changes.append(change)
    if any(change[2]["status"] == "failed" for change in changes) or any(a == "retry" for _, a, _ in later):
        release_memory()
    statuses: dict[str, str] = {}
    if changes or after is not None:
        by_id = {ctx.job_id: ctx for ctx in contexts}
        # A claimed attempt's change takes the job off its lists in its own script, only if it applies.
        fences = [_fence(by_id[change[0]], raws[change[0]]["queue"], release) for change in changes]

        def tidy(pipe: Any) -> None:
            for change, fence in zip(changes, fences):
                if fence is None:
                    unlist(pipe, change[0], raws[change[0]]["queue"], by_id[change[0]].node)
            if after is not None:
                after(pipe)
            if ended is not None and changes:
                try:
                    ended(pipe, [(change[0], change[2]["status"]) for change in changes])
                except Exception:  # telemetry must never keep an outcome from being written
                    log.exception("could not queue the telemetry of jobs %s", [change[0] for change in changes])

        for change, done in zip(changes, jobs.transition_many(changes, after=tidy, fences=fences)):
            statuses[change[0]] = _status(by_id[change[0]], change[2]["status"], done)
    if dead:
        _dead_letter(jobs, [job_id for job_id in dead if statuses.get(job_id) == "failed"])
    for ctx, action, error in later:
        statuses[ctx.job_id] = _later(jobs, ctx, raws[ctx.job_id], action, error)
    return statuses


def _fence(ctx: JobContext, queue: str, release: bool = False) -> Fence | None:
    """What an attempt's outcome is fenced by; ``release``: its lease is dropped with the change."""
    if not ctx.fenced:
        return None
    return Fence(ctx.attempt, unlist=(queue, ctx.node), release=worker_id() if release else None)


def _status(ctx: JobContext, status: str, done: Transition) -> str:
    """The job's status after an outcome write: ``status`` when it applied, ``superseded`` when its fence
    refused it (logged once), else what the record already was."""
    if done.applied:
        return status
    if done.fenced:
        ctx.lost(f"outcome ({status})", done.previous)
        return "superseded"
    return str(done.previous)


def _change(ctx: JobContext, result: Any, raw: dict[str, Any], begin: tuple[float, float],
            later: list[tuple[JobContext, str, GpuqError | None]], dead: set[str]) -> Change | None:
    """The terminal change for one outcome, or None when it is handed back or retried (noted in ``later``)."""
    max_attempts = get_spec(ctx.kind).max_attempts
    action, error = decide(result, ctx.attempt, max_attempts)
    encoded = None
    if action == "succeed":
        try:
            encoded = encode_result(ctx, result)
        except Exception as exc:  # noqa: BLE001 - e.g. the result could not be stored
            result = exc
            action, error = decide(exc, ctx.attempt, max_attempts)
    _forget_frames(result if isinstance(result, BaseException) else None)  # frames hold tensors: free them
    timings = timed(ctx, begin)
    if action == "succeed":
        return terminal_change(ctx.job_id, "succeeded", timings, result=encoded, extra=ctx.record_fields)
    if action == "cancel":
        reason = result.message if isinstance(result, GpuqError) else "cancelled"
        return terminal_change(ctx.job_id, "cancelled", timings, event_data={"reason": reason})
    if action in ("hand_back", "retry", "drop"):
        later.append((ctx, action, error))
        return None
    assert error is not None
    log.warning("job %s failed: %s: %s", ctx.job_id, error.type_name, error.message)
    if action == "dead_letter":
        dead.add(ctx.job_id)
    return terminal_change(ctx.job_id, "failed", timings, error=error.to_dict(), extra=ctx.record_fields)


def _forget_frames(exc: BaseException | None, depth: int = 8) -> None:
    while exc is not None and depth:
        exc.__traceback__, exc, depth = None, exc.__cause__ or exc.__context__, depth - 1


def _later(jobs: JobStore, ctx: JobContext, raw: dict[str, Any], action: str, error: GpuqError | None) -> str:
    """Hand back or retry one job; ``Requeue`` when Redis or the broker cannot take it now."""
    why = error.message if error is not None else "job store unreachable"
    if action == "drop":  # the refused write that found it out was logged
        log.info("job %s: attempt %d was superseded; nothing written", ctx.job_id, ctx.attempt)
        return "superseded"
    try:
        if action == "retry" and error is not None:
            return retry(jobs, ctx, raw, error)
        log.warning("job %s: %s; handing it back", ctx.job_id, why)
        return hand_back(jobs, ctx, raw, why)
    except redis.RedisError:
        # Redis is still down: let the broker requeue the message; failing both, the sweeper requeues the
        # job once its lease expires.
        raise Requeue(why) from None


def hand_back(jobs: JobStore, ctx: JobContext, raw: dict[str, Any], why: str) -> str:
    """Give an interrupted job back: running -> queued, and publish it again right away.

    Rejecting the message would also requeue it, but Celery's main process sits in its soft-shutdown
    wait until the window ends, so the reject (and the requeue) would only happen then. Publishing a
    fresh message lets another worker start within milliseconds; the original message is acked when the
    parent catches up, and if it is restored instead, the claim logic drops it as a duplicate.
    """
    done = _requeue_attempt(jobs, ctx, raw["queue"],
                            {"message": f"{why}; returned to the queue", "progress": ctx.last_progress})
    if not done.applied:  # not this attempt's to hand back: publishing would run it twice
        return _status(ctx, "requeued", done)
    _publish(ctx, raw, why)
    return "requeued"


def retry(jobs: JobStore, ctx: JobContext, raw: dict[str, Any], error: GpuqError) -> str:
    """A retryable failure: back to queued, published again once its backoff has passed."""
    delay = backoff_s(ctx.attempt)
    max_attempts = get_spec(ctx.kind).max_attempts
    log.warning("job %s failed (%s: %s); retrying in %.1fs", ctx.job_id, error.type_name, error.message,
                delay)
    done = _requeue_attempt(jobs, ctx, raw["queue"],
                            {"message": f"{error.type_name}: {error.message}; retrying in {delay:g}s (attempt "
                                        f"{ctx.attempt} of {max_attempts})", "error": error.to_dict(),
                             "retry_in_s": delay})
    if not done.applied:
        return _status(ctx, "retrying", done)
    _publish(ctx, raw, error.message, countdown=delay)
    return "retrying"


def _publish(ctx: JobContext, raw: dict[str, Any], why: str, countdown: float | None = None) -> None:
    from gpuq.worker.celery_app import app  # the app only: it imports no worker module

    try:
        dispatch.publish(app, ctx.job_id, get_spec(ctx.kind), raw.get("priority") or "normal",
                         countdown=countdown)
    except GpuqError:
        raise Requeue(why) from None


def _requeue_attempt(jobs: JobStore, ctx: JobContext, queue: str, data: dict[str, Any]) -> Transition:
    """``requeue`` for the attempt ``ctx`` runs: fenced by it, unlisted and its lease dropped in the same
    script (before the caller publishes, or the next worker would see the lease held)."""
    fence = _fence(ctx, queue, release=True)
    if fence is None:  # as before fences: published whatever the record said
        requeue(jobs, ctx.job_id, ["running"], queue, ctx.node, data)
        return Transition(True, "running")
    return jobs.transition(ctx.job_id, ["running"], {"status": "queued"}, "log", data, fence=fence)


def requeue(jobs: JobStore, job_id: str, allowed: list[str], queue: str, node: str | None,
            data: dict[str, Any], drop_lease: bool = True) -> bool:
    """Put a job back to queued (its ``log`` event says why), off its queue's running set and ``node``'s
    held jobs; the caller publishes its message. True when the record moved."""
    def tidy(pipe: Any) -> None:  # in the transition's round trip
        unlist(pipe, job_id, queue, node)
        if drop_lease:
            pipe.delete(keys.lease(job_id))  # before publishing, or the next worker would see it held

    return jobs.transition(job_id, allowed, {"status": "queued"}, "log", data, after=tidy).applied


def give_up(jobs: JobStore, raw: dict[str, Any], attempts: int, max_attempts: int) -> str:
    """A job whose worker died under it on every attempt: failed as ``worker_lost`` and dead-lettered."""
    error = WorkerLost(f"job was interrupted {attempts - 1} times (its worker died each time); giving up "
                       f"after max_attempts={max_attempts}")
    timings = {**(raw.get("timings") or {}), "finished_at": now()}
    status = finish(jobs, raw["id"], raw["queue"], "failed", timings, error=error.to_dict())
    if status == "failed":
        _dead_letter(jobs, [raw["id"]])
    return status


def unreadable(jobs: JobStore, raw: dict[str, Any], problem: str) -> str:
    """A record whose stored params do not validate as its kind's (written by hand, or by another version):
    failed before it is claimed, so no handler ever sees them and no retry can help."""
    error = InvalidInput(f"params: the stored params are not valid {raw['kind']} params: {problem}",
                         field="params")
    timings = {**(raw.get("timings") or {}), "finished_at": now()}
    return finish(jobs, raw["id"], raw["queue"], "failed", timings, error=error.to_dict())


def time_out(jobs: JobStore, job_ids: Sequence[str], queue: str | None, message: str,
             node: str) -> list[dict[str, Any]]:
    """Fail jobs whose hard time limit fired outside their thread (watchdog, or the prefork parent); returns
    the records (as read before) of those this call failed."""
    error = JobTimeout(message).to_dict()
    failed = []
    for job_id in job_ids:
        raw = jobs.get_raw(job_id)
        if raw is None:
            continue
        timings = {**(raw.get("timings") or {}), "finished_at": time.time()}
        status = finish(jobs, job_id, queue or raw["queue"], "failed", timings, node=node, error=error)
        if status == "failed" and raw["status"] in ("queued", "running"):
            failed.append(raw)
    return failed


def _dead_letter(jobs: JobStore, job_ids: list[str]) -> None:
    if job_ids:
        jobs.r.zadd(keys.deadletter(), {job_id: now() for job_id in job_ids})


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
