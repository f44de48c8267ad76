"""Publishing jobs to Celery without importing the worker: a producer-only Celery app."""
from __future__ import annotations

from functools import lru_cache

from celery import Celery

from common.celery_config import TASK_NAME, celery_config, message_options
from common.errors import ServiceUnavailable
from common.jobs.registry import JobSpec
from common.settings import get_settings


@lru_cache(maxsize=1)
def producer_app() -> Celery:
    """Celery app used only to publish ``gpuq.run_job`` messages."""
    app = Celery("gpuq-api")
    app.conf.update(celery_config(get_settings()))
    return app


def publish(job_id: str, spec: JobSpec, priority: str, queue: str | None = None) -> None:
    """Send the job's message to ``queue`` (default: its kind's shared queue); 503 when the broker is down."""
    app = producer_app()
    options = message_options(spec, priority, queue or spec.queue, get_settings())
    try:
        with app.producer_or_acquire() as producer:
            app.send_task(TASK_NAME, args=[job_id], producer=producer, task_id=job_id, **options)
    except Exception as exc:  # noqa: BLE001 - any broker failure means the job was not accepted
        raise ServiceUnavailable(f"queue unavailable: {type(exc).__name__}") from exc
