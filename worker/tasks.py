"""Celery tasks: thin. Decode the message, run the job, let the runner record the outcome."""
from __future__ import annotations

from typing import Any

from celery.exceptions import Reject

from common.celery_config import TASK_NAME
from worker.celery_app import app


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self: Any, job_id: str) -> str:
    """Run gpuq job ``job_id`` (the message carries only the id; the record holds the request)."""
    from worker.runner import Requeue
    from worker.runner import run_job as execute

    try:
        return execute(str(job_id))
    except Requeue as exc:
        # Interrupted by shutdown: the message goes back to the queue now, not after the visibility timeout.
        raise Reject(str(exc), requeue=True) from None
