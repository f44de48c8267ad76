"""Recovery sweeper: puts jobs whose worker died back on their queue once their lease has expired.

Runs in every worker's parent process; a short Redis lock lets one of them sweep at a time. Without it a
job whose whole worker host vanished would wait for the broker's visibility timeout (hours, since it must
exceed the longest job); with it, recovery takes about one lease TTL.
"""
from __future__ import annotations

import logging
import time

import redis
from celery import Celery

from gpuq.common import dispatch, keys
from gpuq.common.jobs.registry import all_specs, get_spec
from gpuq.common.records import JobStore
from gpuq.common.settings import get_settings
from gpuq.worker import outcome
from gpuq.worker.lease import holder

log = logging.getLogger(__name__)


def sweep_once(app: Celery, client: redis.Redis) -> list[str]:
    """Requeue every running job without a live lease; returns the job ids requeued."""
    settings = get_settings()
    if not client.set(keys.sweeper_lock(), "1", nx=True, px=int(settings.sweep_interval_s * 1000)):
        return []
    jobs = JobStore(client)
    cutoff = time.time() - settings.lease_ttl_s
    requeued: list[str] = []
    for queue in sorted({s.queue for s in all_specs()}):
        for job_id in client.zrangebyscore(keys.running(queue), "-inf", cutoff):
            if holder(client, job_id) is None and _requeue(app, jobs, job_id, queue):
                requeued.append(job_id)
    return requeued


def _requeue(app: Celery, jobs: JobStore, job_id: str, queue: str) -> bool:
    raw = jobs.get_raw(job_id)
    if raw is None or raw["status"] != "running":
        jobs.r.zrem(keys.running(queue), job_id)
        return False
    # The lease already expired (that is why the job is here): a fresh one taken meanwhile must not be dropped.
    moved = outcome.requeue(jobs, job_id, ["running"], queue, raw.get("node"),
                            {"message": f"worker {raw.get('worker')} lost (lease expired); job requeued"},
                            drop_lease=False)
    if moved:
        dispatch.publish(app, job_id, get_spec(raw["kind"]), raw.get("priority") or "normal")
        log.warning("requeued job %s from lost worker %s", job_id, raw.get("worker"))
    return moved
