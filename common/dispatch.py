"""Publishing a job's Celery message: used by the API on submit and by the worker's sweeper on recovery."""
from __future__ import annotations

from typing import Any

from celery import Celery

from common.celery_config import PRIORITY_LEVELS, TASK_NAME
from common.errors import ServiceUnavailable
from common.jobs.registry import JobSpec
from common.settings import get_settings


def publish(app: Celery, job_id: str, spec: JobSpec, priority: str, queue: str | None = None) -> None:
    """Send ``gpuq.run_job(job_id)`` to ``queue`` (default: the kind's shared queue); 503 when the broker is unreachable.

    The soft limit lets the job record its own timeout; the hard limit (soft + grace) kills a job
    that ignores it, and the worker parent records that.
    """
    settings = get_settings()
    limit = spec.effective_time_limit(settings)
    options: dict[str, Any] = {
        "queue": queue or spec.queue, "task_id": job_id, "priority": PRIORITY_LEVELS.get(priority, 3),
        "soft_time_limit": limit, "time_limit": limit + settings.time_limit_grace_s,
        "retry": True, "retry_policy": {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
        # Display only (Flower's args/kwargs columns): the message itself carries just the job id.
        "argsrepr": repr([job_id]), "kwargsrepr": repr({"kind": spec.kind, "priority": priority}),
    }
    try:
        with app.producer_or_acquire() as producer:
            app.send_task(TASK_NAME, args=[job_id], producer=producer, **options)
    except Exception as exc:  # noqa: BLE001 - any broker failure means the job was not accepted
        raise ServiceUnavailable(f"queue unavailable: {type(exc).__name__}") from exc
