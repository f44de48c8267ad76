"""Publishing jobs to Celery without importing the worker: a producer-only Celery app."""
from __future__ import annotations

from functools import lru_cache

from celery import Celery

from gpuq.common import broker_transport, dispatch
from gpuq.common.celery_config import celery_config
from gpuq.common.jobs.registry import JobSpec
from gpuq.common.settings import get_settings


@lru_cache(maxsize=1)
def producer_app() -> Celery:
    """Celery app used only to publish ``gpuq.run_job`` messages."""
    broker_transport.install()
    app = Celery("gpuq-api")
    app.conf.update(celery_config(get_settings()))
    return app


def publish(job_id: str, spec: JobSpec, priority: str, queue: str | None = None) -> None:
    """Send the job's message to ``queue`` (default: its kind's shared queue); 503 when the broker is down."""
    dispatch.publish(producer_app(), job_id, spec, priority, queue)


def publish_group(job_ids: list[str], spec: JobSpec, priority: str, queue: str | None = None) -> None:
    """Send one group message for fresh jobs of one kind, model and priority (bulk submits)."""
    dispatch.publish_group(producer_app(), job_ids, spec, priority, queue)
