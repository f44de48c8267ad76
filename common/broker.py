"""Celery task messages built by gpuq itself, so the API can store a job and enqueue it in one Redis script.

Publishing through Celery (``send_task``) cost the API about 0.7 ms of CPU and one more Redis round trip per
job, most of it building and re-serialising a message whose content never changes but for the job id. This
module writes the same message Celery would: protocol 2 (headers carry the task name, id and time limits; the
body is ``[[job_id], {}, embed]``), in the envelope kombu's Redis transport stores (base64 body, delivery
info, priority) and pushed onto the list kombu's consumer pops for that queue and priority. A test compares it
field by field with a message published by Celery. Skipped on the way: Celery's optional ``task-sent`` event
(Flower shows a task from the worker's ``task-received`` on).
"""
from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from bisect import bisect
from functools import lru_cache

from common.celery_config import HARD_LIMIT_GRACE_S, PRIORITY_LEVELS, TASK_NAME
from common.jobs.registry import JobSpec
from common.settings import Settings

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_STEPS = sorted(set(PRIORITY_LEVELS.values()))


@lru_cache(maxsize=1)
def _origin() -> str:
    return f"gpuq-api{os.getpid()}@{socket.gethostname()}"


def list_key(queue: str, priority: int) -> str:
    """The Redis list kombu's consumer pops for ``queue`` at ``priority`` (its ``_q_for_pri``, sep ``:``)."""
    step = _STEPS[bisect(_STEPS, priority) - 1]
    return f"{queue}:{step}" if step else queue


def task_message(job_id: str, spec: JobSpec, priority: str, queue: str, settings: Settings) -> tuple[str, str]:
    """(list key, payload) of the ``gpuq.run_job`` message for ``job_id``, as Celery would publish it."""
    soft = spec.effective_time_limit(settings)
    level = PRIORITY_LEVELS[priority]
    body = json.dumps([[job_id], {}, _EMBED]).encode()
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": TASK_NAME, "id": job_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [soft + HARD_LIMIT_GRACE_S, soft],
            "root_id": job_id, "parent_id": None, "argsrepr": repr([job_id]), "kwargsrepr": "{}",
            "origin": _origin(), "ignore_result": True, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": job_id, "reply_to": "", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": level,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }
    return list_key(queue, level), json.dumps(message, separators=(",", ":"))
