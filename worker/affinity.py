"""The worker's side of affinity routing: which queues it owns, which models it holds, whether it is alive.

Every worker consumes the shared queue of each kind it serves plus a private queue per kind
(``<queue>@<node>``) that the API fills with jobs for models this worker holds. The API reads three things,
all written here: the liveness sorted set (``workers:expiry``: last heartbeat + this worker's TTL, so a reader
needs no TTL of its own), the registry of private queues (kept after death until the reaper has emptied them),
and the set of model references resident in the worker.
"""
from __future__ import annotations

import json
import logging
import time

from gpuq.common import keys
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import get_settings

log = logging.getLogger(__name__)


def current_node() -> str:
    """This worker's node name (the Celery node; pool children inherit it through the environment)."""
    from gpuq.worker.runner import node_name

    return node_name()


def own_queues(consumed: list[str]) -> dict[str, str]:
    """{private queue: the shared queue it stands in for} among the queues a worker consumes."""
    return {q: q.split("@", 1)[0] for q in consumed if "@" in q}


def beat(node: str, consumed: list[str], info: dict[str, object]) -> None:
    """One heartbeat, atomically: liveness (the last-beat and the expiry sets), the private queues (which the
    reaper needs after the worker is gone; rewritten every beat, so a worker wrongly taken for dead comes
    back) and the worker's info.
    """
    settings = get_settings()
    now = time.time()
    pipe = get_redis().pipeline(transaction=True)
    pipe.zadd(keys.workers(), {node: now})
    pipe.zadd(keys.worker_expiry(), {node: now + settings.worker_ttl_s})
    pipe.hset(keys.worker_queues(), node, json.dumps({"queues": own_queues(consumed)}))
    pipe.set(keys.worker_info(node), json.dumps(info), ex=int(settings.worker_ttl_s * 3) + 1)
    pipe.execute()


def publish_held(models: list[str]) -> None:
    """Replace the set of models this worker holds (the resident cache calls this on every change)."""
    key = keys.worker_models(current_node())
    pipe = get_redis().pipeline(transaction=True)
    pipe.delete(key)
    if models:
        pipe.sadd(key, *models)
    pipe.execute()


def leave(node: str) -> None:
    """Graceful exit: stop being live at once so the API routes nothing more here."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.zrem(keys.workers(), node)
    pipe.zrem(keys.worker_expiry(), node)
    pipe.delete(keys.worker_models(node))
    pipe.execute()
