"""Publishing jobs to Celery without importing the worker: a producer-only Celery app."""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from celery import Celery

from common.celery_config import PRIORITY_LEVELS, TASK_NAME, celery_config
from common.errors import ServiceUnavailable
from common.jobs.registry import JobSpec
from common.settings import get_settings

# Seconds between the soft limit (the job records a timeout itself) and the hard kill.
HARD_LIMIT_GRACE_S = 30
_local = threading.local()


@lru_cache(maxsize=1)
def producer_app() -> Celery:
    """Celery app used only to publish ``gpuq.run_job`` messages."""
    app = Celery("gpuq-api")
    app.conf.update(celery_config(get_settings()))
    return app


def publish(job_id: str, spec: JobSpec, priority: str) -> None:
    """Send the job's message to its kind's queue; 503 when the broker is unreachable."""
    app = producer_app()
    limit = spec.effective_time_limit(get_settings())
    options: dict[str, Any] = {
        "queue": spec.queue, "task_id": job_id, "priority": PRIORITY_LEVELS[priority],
        "soft_time_limit": limit, "time_limit": limit + HARD_LIMIT_GRACE_S,
        "retry": True, "retry_policy": {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
    }
    try:
        with app.producer_or_acquire() as producer:
            app.send_task(TASK_NAME, args=[job_id], producer=producer, **options)
    except Exception as exc:
        raise ServiceUnavailable(f"queue unavailable: {type(exc).__name__}") from exc
