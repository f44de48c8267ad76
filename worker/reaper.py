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
"""
from __future__ import annotations

import json
import logging
import time
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


def reap_once(r: redis.Redis, app: Any, interval_s: float) -> dict[str, dict[str, int]]:
    """Recover every dead worker, if this worker wins the reaper lock for this interval."""
    if not r.set(keys.reaper_lock(), "1", nx=True, px=max(int(interval_s * 1000), 100)):
        return {}
    return {node: recover(r, app, node) for node in dead_nodes(r, time.time())}
