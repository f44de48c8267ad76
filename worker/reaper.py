"""Recover what a dead worker held, so routing never strands a job on it.

A worker is dead once its liveness (``workers:expiry``) has run out. One live worker at a time (a Redis lock)
then, for each dead worker in the private-queue registry:

1. moves every message still waiting in its private queues back to the consuming end of the shared queue of
   the same kind and priority (they waited longest, so they go first);
2. re-publishes, to the shared queue, every job it had claimed and not finished (its held set), after deleting
   that job's stale unacknowledged copy from kombu's ``unacked`` hash, which would otherwise only come back
   after the visibility timeout (hours). A job that finished meanwhile is skipped; one redelivered twice
   anyway is run once, because claiming refuses terminal jobs and jobs running on a live worker;
3. forgets it: held models, private-queue registration, liveness entries.

Then, on every pass, it re-publishes every delivered message that no live worker lists and whose jobs are
still queued: a message kombu had already moved into ``unacked`` for the dead
worker before its consumer saw it (and listed its job on receipt) belongs to nobody, and would otherwise wait
out the visibility timeout too. Only messages delivered at least one worker TTL ago count, so a live worker's
freshly delivered message is never taken from it; one taken anyway would still run once (claiming dedups). A
live worker's listed message counts after three TTLs unclaimed with no eta ahead: its consumer can lose what it
had reserved when it reconnects after a Redis outage, and never gives it back.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from datetime import datetime
from typing import Any

import redis

from gpuq.common import keys
from gpuq.common.celery_config import TASK_NAME, message_options, queue_lists
from gpuq.common.jobs.registry import get_spec
from gpuq.common.records import JobStore
from gpuq.common.settings import get_settings
from gpuq.worker import outcome

log = logging.getLogger(__name__)
# kombu's Redis transport: the hash and index of delivered-but-unacknowledged messages (no global key prefix).
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"

# Move every message from one list to another, newest first onto the consuming (right) end, so the oldest ends
# up consumed first; atomic, so a message is never in both lists or neither.
_MOVE_ALL = """
local n = 0
while true do
  local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not m then return n end
  n = n + 1
end
"""


def dead_nodes(r: redis.Redis, now: float) -> list[str]:
    """Registered workers whose liveness has run out (or who left without being cleaned up)."""
    nodes = list(r.hkeys(keys.worker_queues()))
    if not nodes:
        return []
    expiry = r.zmscore(keys.worker_expiry(), nodes)
    return [node for node, until in zip(nodes, expiry) if until is None or float(until) < now]


def move_private_queues(r: redis.Redis, node: str) -> int:
    """Move the dead worker's waiting messages to the shared queues; returns how many."""
    raw = r.hget(keys.worker_queues(), node)
    mapping: dict[str, str] = json.loads(raw)["queues"] if raw else {}
    move = r.register_script(_MOVE_ALL)
    moved = 0
    for own, shared in mapping.items():
        for src, dst in zip(queue_lists(own), queue_lists(shared)):
            moved += int(move(keys=[src, dst]))
    return moved


def _stale_unacked(r: redis.Redis, job_ids: set[str]) -> list[str]:
    tags = []
    for tag, raw in r.hscan_iter(UNACKED, count=500):
        try:
            payload = json.loads(raw)[0]
            if payload["headers"]["id"] in job_ids:
                tags.append(tag)
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return tags


def requeue_held(r: redis.Redis, app: Any, node: str) -> int:
    """Re-publish the dead worker's unfinished jobs to their shared queues; returns how many."""
    held = set(r.smembers(keys.worker_jobs(node)))
    if not held:
        return 0
    tags = _stale_unacked(r, held)
    if tags:
        r.pipeline(transaction=True).hdel(UNACKED, *tags).zrem(UNACKED_INDEX, *tags).execute()
    jobs, settings, requeued = JobStore(r), get_settings(), 0
    for job_id in held:
        raw = jobs.get_raw(job_id)
        if raw is None or raw["status"] not in ("queued", "running") or raw.get("node") not in (None, node):
            r.srem(keys.worker_jobs(node), job_id)
            continue
        spec = get_spec(raw["kind"])
        options = message_options(spec, raw.get("priority") or "normal", spec.queue, settings)
        # Back to queued (counted as a requeue), its dead holder's lease and running entry gone, so the new
        # delivery is claimed at once and the lease sweeper does not requeue it a second time.
        outcome.requeue(jobs, job_id, ["running", "queued"], raw["queue"], node,
                        {"message": f"worker {node} died; job requeued to {spec.queue}"})
        app.send_task(TASK_NAME, args=[job_id], task_id=job_id, **options)
        requeued += 1
    return requeued


def recover(r: redis.Redis, app: Any, node: str) -> dict[str, int]:
    """Everything the reaper does for one dead worker."""
    moved = move_private_queues(r, node)
    requeued = requeue_held(r, app, node)
    pipe = r.pipeline(transaction=False)
    pipe.delete(keys.worker_models(node))
    pipe.hdel(keys.worker_queues(), node)
    pipe.zrem(keys.worker_expiry(), node)
    pipe.zrem(keys.workers(), node)
    pipe.execute()
    if moved or requeued:
        log.warning("worker %s is gone: moved %d queued and requeued %d running jobs", node, moved, requeued)
    return {"moved": moved, "requeued": requeued}


def live_nodes(r: redis.Redis, now: float) -> list[str]:
    """Workers whose liveness has not run out."""
    return [str(node) for node in r.zrangebyscore(keys.worker_expiry(), now, "+inf")]


def _message_jobs(raw: str | None) -> list[str]:
    """The job ids an ``unacked`` entry's message carries (one for a job, a list for a group); [] if not gpuq's.

    The entry is kombu's ``[message, exchange, routing key]``; the message body is Celery's
    ``[args, kwargs, embed]``, base64-encoded by the Redis transport.
    """
    try:
        message = json.loads(raw or "")[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        first = json.loads(body)[0][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return []
    if isinstance(first, list):
        return [str(j) for j in first]
    return [first] if isinstance(first, str) else []


def _waits_for_eta(raw: str | None, now: float) -> bool:
    """Whether a stored message is held back by an eta still ahead (a retry's countdown): not stranded."""
    try:
        eta = json.loads(raw or "")[0]["headers"].get("eta")
        return bool(eta) and datetime.fromisoformat(str(eta)).timestamp() > now
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False


def requeue_orphans(r: redis.Redis, app: Any, min_age_s: float, now: float) -> int:
    """Re-publish queued jobs whose delivered message nobody will run.

    That is a message at least ``min_age_s`` old that no live worker lists (its worker died before listing it),
    or one a live worker lists but has left unclaimed three times that long with no eta ahead of it (its
    consumer lost its reserved messages reconnecting after a Redis outage, without giving them back).
    """
    scored = r.zrangebyscore(UNACKED_INDEX, "-inf", now - min_age_s, withscores=True)
    if not scored:
        return 0
    tags, delivered = [str(t) for t, _ in scored], {str(t): float(at) for t, at in scored}
    held: set[str] = set()
    for node in live_nodes(r, now):
        held |= {str(j) for j in r.smembers(keys.worker_jobs(node))}
    jobs, settings, requeued = JobStore(r), get_settings(), 0
    for tag, raw in zip(tags, r.hmget(UNACKED, tags)):
        ids = _message_jobs(raw)
        if not ids or _waits_for_eta(raw, now):
            continue
        if held.intersection(ids) and delivered[tag] > now - 3 * min_age_s:
            continue
        queued = [rec for rec in (jobs.get_raw(j) for j in ids) if rec is not None and rec["status"] == "queued"]
        if not queued:
            continue
        r.pipeline(transaction=True).hdel(UNACKED, tag).zrem(UNACKED_INDEX, tag).execute()
        for rec in queued:
            spec = get_spec(rec["kind"])
            options = message_options(spec, rec.get("priority") or "normal", spec.queue, settings)
            app.send_task(TASK_NAME, args=[rec["id"]], task_id=rec["id"], **options)
            requeued += 1
    if requeued:
        log.warning("re-published %d queued jobs whose delivered message nobody was going to run", requeued)
    return requeued


def reap_once(r: redis.Redis, app: Any, interval_s: float) -> dict[str, dict[str, int]]:
    """Recover every dead worker, if this worker wins the reaper lock for this interval."""
    if not r.set(keys.reaper_lock(), "1", nx=True, px=max(int(interval_s * 1000), 100)):
        return {}
    now = time.time()
    recovered = {node: recover(r, app, node) for node in dead_nodes(r, now)}
    # Every pass, not only the one that found the death: a message delivered just before its worker died is
    # not a worker TTL old yet when that worker is declared dead.
    requeue_orphans(r, app, get_settings().worker_ttl_s, now)
    return recovered
