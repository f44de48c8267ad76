"""Worker lifecycle hooks: identity, heartbeats (+ the reaper), preloading, hard-time-limit bookkeeping."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery import signals
from celery.exceptions import TimeLimitExceeded

from common.errors import JobTimeout
from common.redis_client import get_redis
from common.settings import get_settings
from worker import affinity

log = logging.getLogger(__name__)
_stop = threading.Event()


@signals.celeryd_init.connect
def _name_worker(sender: str | None = None, **_: Any) -> None:
    """Children inherit the node name, so job records say which worker ran them."""
    os.environ["GPUQ_WORKER_NAME"] = str(sender or socket.gethostname())
    from worker.celery_app import app

    if app.conf.worker_pool == "threads":
        # Celery's two INFO lines per task (received, succeeded) cost a threads worker ~6% of its interpreter
        # time at hundreds of jobs a second; the job record and its events carry the same facts. Set before
        # the consumer starts: Celery decides whether to log them when it builds its task strategies.
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _beat(node: str, queues: list[str], pool: str) -> None:
    from worker.celery_app import app
    from worker.reaper import reap_once

    settings = get_settings()
    info = {"node": node, "host": socket.gethostname(), "pid": os.getpid(), "queues": queues, "pool": pool,
            "started_at": time.time()}
    next_reap = 0.0
    while not _stop.is_set():
        try:
            affinity.beat(node, queues, info)
            if time.monotonic() >= next_reap:
                next_reap = time.monotonic() + settings.reaper_interval_s
                reap_once(get_redis(), app, settings.reaper_interval_s)
        except Exception as exc:  # noqa: BLE001 - Redis may be down; keep beating when it returns
            log.warning("heartbeat failed: %s", exc)
        _stop.wait(min(settings.worker_heartbeat_s, settings.reaper_interval_s))


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    from worker.celery_app import app
    from worker.reaper import requeue_held

    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender else []
    node = os.environ.get("GPUQ_WORKER_NAME", socket.gethostname())
    pool = str(app.conf.worker_pool)
    if pool != "prefork":  # jobs run in this process: load pinned models before anyone routes jobs here
        _preload()
    try:
        affinity.beat(node, queues, {"node": node, "pid": os.getpid(), "queues": queues, "pool": pool})
        requeue_held(get_redis(), app, node)  # jobs a previous run of this node claimed and never finished
    except Exception as exc:  # noqa: BLE001 - start serving anyway; the reaper retries later
        log.warning("could not register queues / recover earlier jobs: %s", exc)
    threading.Thread(target=_beat, args=(node, queues, pool), name="gpuq-heartbeat", daemon=True).start()


@signals.worker_process_init.connect
def _child_init(**_: Any) -> None:
    """A prefork child runs the jobs: pinned models load here (never in the parent, which must not touch
    CUDA)."""
    _preload()


def _preload() -> None:
    from worker.preload import configure_torch, preload

    configure_torch()
    preload(get_settings().preload)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _stop.set()
    try:
        affinity.leave(os.environ.get("GPUQ_WORKER_NAME", socket.gethostname()))
    except Exception as exc:  # noqa: BLE001 - the reaper cleans up after a worker that could not say goodbye
        log.warning("could not deregister on shutdown: %s", exc)


@signals.task_failure.connect
def _hard_time_limit(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    """The parent sees a hard time limit after killing the child; fail the job record there."""
    if not isinstance(exception, TimeLimitExceeded) or not task_id:
        return
    from worker.runner import finish, job_store, node_name

    jobs = job_store()
    raw = jobs.get_raw(task_id)
    if raw is None:
        return
    timings = {**(raw.get("timings") or {}), "finished_at": time.time()}
    finish(jobs, task_id, raw["queue"], "failed", timings, node=node_name(),
           error=JobTimeout(f"job exceeded its hard time limit ({exception})").to_dict())
