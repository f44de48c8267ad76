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
import threading
import time

from gpuq.common import keys
from gpuq.common.outage import OUTAGE_ERRORS, Outage
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import get_settings
from gpuq.worker.identity import node_name

log = logging.getLogger(__name__)


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


_owed: list[str] | None = None  # the held set a failed publish still has to write (None: nothing owed)
_owed_lock = threading.Lock()  # held across each write, so an older set never lands after a newer one


def publish_held(models: list[str]) -> None:
    """Replace the set of models this worker holds (the resident cache calls this on every change).

    A publish that fails because Redis is down is owed: a background thread writes the newest owed set as
    soon as Redis is back (in the process that holds the models, prefork child or threads worker), so
    routing does not go on without this worker's models after an outage.
    """
    global _owed
    with _owed_lock:
        try:
            _write_held(models)
            _owed = None
            return
        except OUTAGE_ERRORS as exc:
            failure, start = exc, _owed is None
            _owed = list(models)
    if start:
        threading.Thread(target=_republish, name="gpuq-held-models", daemon=True).start()
    raise failure


def _republish() -> None:
    global _owed
    outage = Outage("publishing resident models", log)
    while True:
        with _owed_lock:
            if _owed is None:
                return
            try:
                _write_held(_owed)
                _owed = None
                outage.ok()
                return
            except OUTAGE_ERRORS as exc:
                delay = outage.failed(exc)
        time.sleep(delay)


def _write_held(models: list[str]) -> None:
    key = keys.worker_models(node_name())
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
