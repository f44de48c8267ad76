"""Redis key layout, in one place so every reader and writer agrees."""
from __future__ import annotations

from common.settings import get_settings


def _p() -> str:
    return get_settings().key_prefix


def job(job_id: str) -> str:
    return f"{_p()}:job:{job_id}"


def events(job_id: str) -> str:
    return f"{_p()}:events:{job_id}"


def tenant_jobs(tenant: str) -> str:
    return f"{_p()}:tenant:{tenant}:jobs"


def idempotency(tenant: str, key: str) -> str:
    return f"{_p()}:idem:{tenant}:{key}"


def workers() -> str:
    return f"{_p()}:workers"


def worker_expiry() -> str:
    """Sorted set node -> the time its liveness runs out (last beat + that worker's own TTL)."""
    return f"{_p()}:workers:expiry"


def worker_info(worker_id: str) -> str:
    return f"{_p()}:worker:{worker_id}"


def running(queue: str) -> str:
    """Running jobs of ``queue`` by start time (the claim script appends the queue to ``running("")``)."""
    return f"{_p()}:running:{queue}"



def worker_jobs(node: str) -> str:
    """Jobs a worker has claimed and not finished: what the reaper recovers when the worker dies."""
    return f"{_p()}:worker:{node}:jobs"


def worker_models(node: str) -> str:
    """Model references resident in a worker (published by the process that loads them)."""
    return f"{_p()}:worker:{node}:models"


def worker_queues() -> str:
    """Hash node -> JSON {own queue: shared queue}; kept until the reaper empties a dead worker's queues."""
    return f"{_p()}:worker-queues"


def assignment(model: str) -> str:
    """The worker a model not yet resident anywhere was assigned to, so its first jobs all go there."""
    return f"{_p()}:assign:{model}"


def done_channel() -> str:
    """Pub/sub channel carrying the id of every job that reached a terminal state (``Prefer: wait``)."""
    return f"{_p()}:done"


def reaper_lock() -> str:
    return f"{_p()}:reaper-lock"


def own_queue(queue: str, node: str) -> str:
    """A worker's private queue for jobs of ``queue`` routed to it by affinity."""
    return f"{queue}@{node}"
