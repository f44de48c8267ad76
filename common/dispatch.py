"""Publishing a job's Celery message: used by the API on submit and by the worker's sweeper on recovery."""
from __future__ import annotations

from typing import Any

from celery import Celery

from gpuq.common.celery_config import GROUP_TASK_NAME, PRIORITY_LEVELS, TASK_NAME, message_options
from gpuq.common.errors import ServiceUnavailable
from gpuq.common.jobs.registry import JobSpec
from gpuq.common.settings import get_settings


def publish(app: Celery, job_id: str, spec: JobSpec, priority: str, queue: str | None = None,
            countdown: float | None = None) -> None:
    """Send ``gpuq.run_job(job_id)`` to ``queue`` (default: the kind's shared queue), to run no sooner than
    ``countdown`` seconds from now (a retry's backoff); 503 when the broker is unreachable. A job past its hard
    limit is killed, and the worker parent records that."""
    options = _options(spec, priority, queue)
    if countdown:
        options["countdown"] = countdown
    # Display only (Flower's args/kwargs columns): the message itself carries just the job id.
    options.update(task_id=job_id, argsrepr=repr([job_id]), kwargsrepr=repr({"kind": spec.kind, "priority": priority}))
    _send(app, TASK_NAME, [job_id], options)


def publish_group(app: Celery, job_ids: list[str], spec: JobSpec, priority: str, queue: str | None = None) -> None:
    """Send one ``gpuq.run_group(job_ids)`` message for fresh jobs of one kind, model and priority.

    The message is acknowledged after every job in it has its outcome, so a worker lost mid-group loses no
    job: the redelivered message runs each job that is not finished through the single-job runner.
    """
    options = _options(spec, priority, queue)
    options.update(argsrepr=repr([f"{len(job_ids)} jobs", job_ids[0]]),
                   kwargsrepr=repr({"kind": spec.kind, "priority": priority, "jobs": len(job_ids)}))
    _send(app, GROUP_TASK_NAME, [job_ids], options)


def _options(spec: JobSpec, priority: str, queue: str | None) -> dict[str, Any]:
    """The soft limit lets a job record its own timeout; the hard limit (soft + grace) kills one that ignores it."""
    return message_options(spec, priority if priority in PRIORITY_LEVELS else "normal", queue or spec.queue,
                           get_settings())


def _send(app: Celery, name: str, args: list[Any], options: dict[str, Any]) -> None:
    try:
        with app.producer_or_acquire() as producer:
            app.send_task(name, args=args, producer=producer, **options)
    except Exception as exc:  # noqa: BLE001 - any broker failure means the job was not accepted
        raise ServiceUnavailable(f"queue unavailable: {type(exc).__name__}") from exc
