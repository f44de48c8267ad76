"""Waiting for a job inside a request: ``Prefer: wait=N``, ``?wait=N`` and ``/generate``."""
from __future__ import annotations

from gpuq.common import keys
from gpuq.common.finished import wait_all_finished
from gpuq.common.records import Answer, answer_for
from gpuq.common.redis_client import loop_redis
from gpuq.common.settings import Settings


def prefer_wait(header: str | None, settings: Settings) -> float | None:
    """The ``wait`` preference of a ``Prefer`` header (RFC 7240), capped; None when absent or invalid."""
    for pref in (header or "").split(","):
        name, _, value = pref.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            return None  # RFC 7240: a preference that cannot be understood is ignored
        return capped(seconds, settings) if seconds >= 0 else None
    return None


def capped(seconds: float, settings: Settings) -> float:
    """``seconds`` limited to ``GPUQ_SYNC_WAIT_MAX_S``."""
    return min(seconds, settings.sync_wait_max_s)


def applied(seconds: float) -> str:
    """The ``Preference-Applied`` value for a wait of ``seconds``."""
    return f"wait={int(seconds) if float(seconds).is_integer() else round(seconds, 3)}"


async def until_finished(job_id: str, seconds: float) -> bool:
    """True once the job has reached a terminal state, waiting at most ``seconds``."""
    return await until_all_finished([job_id], seconds)


async def until_all_finished(job_ids: list[str], seconds: float) -> bool:
    """True once every job has reached a terminal state, waiting at most ``seconds`` (woken by the process's
    one subscription to finished jobs: common/finished.py)."""
    if seconds <= 0:
        return False
    return await wait_all_finished(job_ids, seconds)


async def read_answers(job_ids: list[str], tenant: str) -> list[Answer]:
    """The records after a wait, read on the event loop's client (no thread hop; one round trip), with their
    results as stored."""
    pipe = loop_redis().pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(keys.job(job_id))
    return [answer_for(raw, job_id, tenant) for job_id, raw in zip(job_ids, await pipe.execute())]
