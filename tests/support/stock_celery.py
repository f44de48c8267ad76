"""A stock Celery worker app with tasks named like gpuq's, recording what each message delivered to it.

Nothing of gpuq runs in it: it proves the messages the API pushes are plain Celery messages. The broker layout
it is told about is gpuq's documented one (priority steps 0/3/6 with ':' between queue and step), which any
consumer of gpuq's queues needs. A task waits while ``stock:hold`` exists, so ``celery inspect`` can be asked
about it while it runs. Run as ``celery -A tests.support.stock_celery worker``, with ``STOCK_BROKER_URL``.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

BROKER = os.environ.get("STOCK_BROKER_URL", "redis://127.0.0.1:6379/0")
RECEIVED = "stock:received"
HOLD = "stock:hold"

app = Celery("stock", broker=BROKER)
app.conf.update(task_serializer="json", accept_content=["json"], worker_hijack_root_logger=False,
                worker_prefetch_multiplier=1, task_acks_late=True,
                broker_transport_options={"priority_steps": [0, 3, 6], "sep": ":",
                                          "queue_order_strategy": "priority"})


def _record(task: Any, args: list[Any]) -> None:
    r = redis.Redis.from_url(BROKER, decode_responses=True)
    deadline = time.monotonic() + 30
    while r.exists(HOLD) and time.monotonic() < deadline:
        time.sleep(0.05)
    request = task.request
    r.rpush(RECEIVED, json.dumps({"task": task.name, "args": args, "id": request.id,
                                  "timelimit": list(request.timelimit or ()),
                                  "routing_key": (request.delivery_info or {}).get("routing_key"),
                                  "priority": (request.delivery_info or {}).get("priority"),
                                  "argsrepr": request.argsrepr}))


@app.task(name="gpuq.run_job", bind=True)
def run_job(self: Any, job_id: str) -> None:
    """Record a single job's message."""
    _record(self, [job_id])


@app.task(name="gpuq.run_group", bind=True)
def run_group(self: Any, job_ids: list[str]) -> None:
    """Record a group's message."""
    _record(self, [job_ids])
