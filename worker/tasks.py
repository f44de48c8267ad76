"""Celery tasks: thin. Decode the message, run the job, let the runner record the outcome."""
from __future__ import annotations

from typing import Any

from celery.exceptions import Reject

from gpuq.common.celery_config import GROUP_TASK_NAME, TASK_NAME
from gpuq.common.jobs.registry import all_specs
from gpuq.common.settings import get_settings
from gpuq.worker.celery_app import app


def _limits(request: Any) -> tuple[float, float | None] | None:
    """(soft, hard) seconds for gpuq's watchdog where the pool enforces none (threads); None under prefork."""
    if app.conf.worker_pool != "threads":
        return None
    hard, soft = request.timelimit or (None, None)
    if soft is None:
        soft = max(s.effective_time_limit(get_settings()) for s in all_specs())
    return float(soft), float(hard) if hard else None


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self: Any, job_id: str) -> str:
    """Run gpuq job ``job_id`` (the message carries only the id; the record holds the request)."""
    from gpuq.worker.outcome import Requeue
    from gpuq.worker.runner import run_job as execute

    try:
        return execute(str(job_id), _limits(self.request))
    except Requeue as exc:
        # Interrupted by shutdown: the message goes back to the queue now, not after the visibility timeout.
        raise Reject(str(exc), requeue=True) from None


@app.task(name=GROUP_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_group(self: Any, job_ids: list[str]) -> dict[str, str]:
    """Run a group of gpuq jobs (a bulk submit's chunk); acked once every job in it has its outcome."""
    from gpuq.worker.groups import run_group as execute
    from gpuq.worker.outcome import Requeue

    try:
        return execute([str(j) for j in job_ids], _limits(self.request))
    except Requeue as exc:
        raise Reject(str(exc), requeue=True) from None
