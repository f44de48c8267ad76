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


def worker_info(worker_id: str) -> str:
    return f"{_p()}:worker:{worker_id}"


def running(queue: str) -> str:
    return f"{_p()}:running:{queue}"


def lease(job_id: str) -> str:
    return f"{_p()}:lease:{job_id}"


def deadletter() -> str:
    return f"{_p()}:deadletter"


def draining(node: str) -> str:
    return f"{_p()}:draining:{node}"


def sweeper_lock() -> str:
    return f"{_p()}:sweeper-lock"


# Issue 4 (metrics): counters and histograms kept in Redis, so every API replica and every scrape agrees.
def stats() -> str:
    """Job counters: ``submitted|<kind>``, ``finished|<kind>|<status>``, ``failed|<kind>|<error type>``."""
    return f"{_p()}:stats"


def wait_histogram(queue: str) -> str:
    return f"{_p()}:stats:wait:{queue}"


def worker_stats(node: str) -> str:
    """One worker node's published telemetry (counters, gauges, preload state)."""
    return f"{_p()}:wstats:{node}"


def worker_histogram(node: str, name: str) -> str:
    return f"{_p()}:wstats:{node}:{name}"
