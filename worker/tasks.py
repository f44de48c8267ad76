"""Celery tasks: thin. Decode the message, run the job, let the runner record the outcome."""
from __future__ import annotations

from typing import Any

from common.celery_config import TASK_NAME
from worker.celery_app import app


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self: Any, job_id: str) -> str:
    """Run gpuq job ``job_id`` (the message carries only the id; the record holds the request)."""
    from worker.runner import run_job as execute

    return execute(str(job_id))
