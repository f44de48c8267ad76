"""Queue load: how many jobs wait on the broker and how many run, per queue.

Autoscaling needs both. A queue whose jobs all run has no waiting messages, and a scaler that only
counted waiting ones (KEDA's Redis list trigger) would remove the workers running them.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from gpuq.common import keys
from gpuq.common.celery_config import PRIORITY_LEVELS
from gpuq.common.jobs.registry import all_specs
from gpuq.common.settings import get_settings

# Must match transport_options() in common/celery_config.py: kombu keeps one list per priority step and
# names the lists "<queue>" (step 0) and "<queue><sep><step>" with sep ":".
_SEP = ":"


@dataclass(frozen=True)
class QueueLoad:
    """One queue's load; ``load`` is what the autoscaler divides by its per-worker target."""

    waiting: int
    running: int
    oldest_wait_s: float

    @property
    def load(self) -> int:
        return self.waiting + self.running

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "load": self.load}


def known_queues() -> list[str]:
    """Every queue some job kind routes to, plus any configured explicitly."""
    return sorted({s.queue for s in all_specs()} | set(get_settings().queues))


def broker_lists(queue: str) -> list[str]:
    """The Redis lists kombu stores ``queue``'s messages in, highest priority first."""
    steps = sorted(set(PRIORITY_LEVELS.values()))
    return [queue if step == 0 else f"{queue}{_SEP}{step}" for step in steps]


def queue_loads(client: redis.Redis, queues: list[str] | None = None) -> dict[str, QueueLoad]:
    """Waiting (LLEN over the priority lists) and running (the running set) per queue, in one round trip."""
    names = queues if queues is not None else known_queues()
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for lst in broker_lists(queue):
            pipe.llen(lst)
            pipe.lindex(lst, -1)  # kombu pushes on the left and pops on the right: -1 is the oldest
        pipe.zcard(keys.running(queue))
    replies = iter(pipe.execute())
    out: dict[str, QueueLoad] = {}
    for queue in names:
        waiting, heads = 0, []
        for _ in broker_lists(queue):
            waiting += int(next(replies))
            heads.append(next(replies))
        out[queue] = QueueLoad(waiting, int(next(replies)), _oldest_wait(client, heads))
    return out


def _oldest_wait(client: redis.Redis, heads: list[Any]) -> float:
    """Age of the oldest job at the head of any priority list (0 when none waits)."""
    ids = [job_id for job_id in (_job_id(h) for h in heads if h) if job_id]
    if not ids:
        return 0.0
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "timings")
    submitted = []
    for timings in pipe.execute():
        try:
            submitted.append(float(json.loads(timings)["submitted_at"]))
        except (TypeError, ValueError, KeyError):
            continue
    return max(0.0, time.time() - min(submitted)) if submitted else 0.0


def _job_id(message: Any) -> str | None:
    """The task id of a kombu message body (gpuq sets it to the job id)."""
    try:
        return str(json.loads(message)["headers"]["id"])
    except (TypeError, ValueError, KeyError):
        return None
