"""Worker lifecycle hooks: the node's name (``identity``), heartbeats with the sweeper's and the reaper's
turns, draining on shutdown signals, and the prefork parent's hard time limit (ended through ``outcome``).

Connected when ``gpuq.worker.main`` imports this module; nothing in the worker imports it back."""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from celery import signals
from celery.exceptions import TimeLimitExceeded

from gpuq.common import broker_transport, keys
from gpuq.common.outage import OUTAGE_ERRORS, Outage
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import get_settings
from gpuq.worker import affinity, identity, outcome
from gpuq.worker.jobstore import job_store
from gpuq.worker.metrics_server import HEARTBEAT
from gpuq.worker.telemetry import count_job

log = logging.getLogger(__name__)
_stop = threading.Event()
_leaving = threading.Event()  # shutting down: no longer announced as live, so nothing more is routed here
_beat_lock = threading.Lock()  # a beat in flight cannot re-announce the worker after it left


@signals.celeryd_init.connect
def _name_worker(sender: str | None = None, **_: Any) -> None:
    """Children inherit the node name, so job records say which worker ran them."""
    identity.name(sender)
    # Celery's two INFO lines per task (received, succeeded) cost a threads worker ~6% of its interpreter time
    # at hundreds of jobs a second, and a prefork worker as much per job (the child logs one, the parent the
    # other); the job record and its events carry the same facts. Set before the consumer starts (Celery
    # decides whether to log them when it builds its task strategies) and before the pool forks.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _beat(app: Any, node: str, queues: list[str], pool: str) -> None:
    from gpuq.worker.reaper import reap_once
    from gpuq.worker.sweeper import sweep_once

    settings = get_settings()
    info = {"node": node, "host": socket.gethostname(), "pid": os.getpid(), "queues": queues, "pool": pool,
            "started_at": time.time()}
    next_sweep = time.monotonic() + settings.sweep_interval_s
    next_reap = 0.0
    outage = Outage(f"heartbeat of {node}", log)  # one line when Redis goes, one when it returns
    while not _stop.is_set():
        try:
            r = get_redis()
            with _beat_lock:
                if not _leaving.is_set():
                    affinity.beat(node, queues, info)  # liveness, private queues, the worker's info
            HEARTBEAT.beat(True)
            if time.monotonic() >= next_sweep:  # jobs whose lease expired (their worker died)
                next_sweep = time.monotonic() + settings.sweep_interval_s
                sweep_once(app, r)
            if time.monotonic() >= next_reap:  # dead workers' private queues and held jobs
                next_reap = time.monotonic() + settings.reaper_interval_s
                reap_once(r, app, settings.reaper_interval_s)
            outage.ok()
        except OUTAGE_ERRORS as exc:  # Redis (or the broker) is down: keep beating until it returns
            HEARTBEAT.beat(False, f"{type(exc).__name__}: {exc}"[:200])
            outage.failed(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in one beat must not stop the next
            HEARTBEAT.beat(False, f"{type(exc).__name__}: {exc}"[:200])
            log.warning("heartbeat failed: %s", exc, exc_info=True)
        _stop.wait(min(settings.worker_heartbeat_s, settings.reaper_interval_s))


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    from gpuq.worker.celery_app import app as celery_app
    from gpuq.worker.reaper import requeue_held

    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender else []
    node = identity.node_name()
    _wrap_shutdown_signals()
    app = sender.app if sender else celery_app
    pool = str(app.conf.worker_pool)
    if pool != "prefork":  # jobs run in this process: load pinned models here (prefork: in the child)
        from gpuq.worker.preload import start_preload

        start_preload(wait=True)
    try:
        get_redis().delete(keys.draining(node))
        affinity.beat(node, queues, {"node": node, "pid": os.getpid(), "queues": queues, "pool": pool})
        requeue_held(get_redis(), app, node)  # jobs a previous run of this node claimed and never finished
    except Exception as exc:  # noqa: BLE001 - start serving anyway; the reaper retries later
        log.warning("could not register queues / recover earlier jobs: %s", exc)
    HEARTBEAT.thread = threading.Thread(target=_beat, args=(app, node, queues, pool), name="gpuq-heartbeat",
                                        daemon=True)
    HEARTBEAT.thread.start()


def _drain() -> None:
    """Tell the running job (through Redis, read at its next progress point) to checkpoint and hand back."""
    node = identity.node_name()
    try:
        get_redis().set(keys.draining(node), "1", ex=get_settings().worker_soft_shutdown_s + 120)
    except Exception as exc:  # noqa: BLE001 - without Redis the soft-shutdown window still applies
        log.warning("could not flag draining: %s", exc)


def _wrap_shutdown_signals() -> None:
    """Flag draining *before* Celery's handler runs: its soft shutdown blocks until the window ends and
    only then sends ``worker_shutting_down``, too late for the running job to hand itself back."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            _drain()
            _leave()
            previous(signum, frame)
        signal.signal(sig, handler)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _stop.set()
    _leave()


def _leave() -> None:
    """Stop being live for routing at once (first shutdown signal, or Celery's shutdown): the heartbeat goes
    on (liveness probes, the sweeper) but no longer announces this worker, and jobs for the models it holds
    go elsewhere instead of into a private queue nobody will consume."""
    _leaving.set()
    try:
        with _beat_lock:
            affinity.leave(identity.node_name())
    except Exception as exc:  # noqa: BLE001 - the reaper cleans up after a worker that could not say goodbye
        log.warning("could not deregister on shutdown: %s", exc)


@signals.task_failure.connect
def _hard_time_limit(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    """The parent sees a hard time limit after killing the child; fail the job record there."""
    if not isinstance(exception, TimeLimitExceeded) or not task_id:
        return
    jobs = job_store()
    failed = outcome.time_out(jobs, [task_id], None, f"job exceeded its hard time limit ({exception})",
                              identity.node_name())
    if failed:  # counted once, by whoever failed it
        pipe = jobs.r.pipeline(transaction=False)
        for raw in failed:
            count_job(pipe, identity.node_name(), raw["kind"], "failed")
        pipe.execute()


def _list_received(pipe: Any, message: Any) -> None:
    """List a delivered job as this worker's the moment its message arrives, before any pool process claims it
    (in the round trip that records the message as unacknowledged: common/broker_transport.py).

    A worker killed between delivery and claim leaves the message in the broker's unacknowledged set, where
    it would wait out the visibility timeout (hours); listed here, the reaper re-publishes it when this
    worker's liveness runs out, as it does for claimed jobs. The claim and the outcome keep the same set.
    """
    if not str(message.headers.get("task", "")).startswith("gpuq."):
        return
    try:
        args = message.decode()[0]  # decoded once: Celery reads the same cached payload next
    except Exception:  # noqa: BLE001 - a message Celery cannot read either: it rejects it itself
        return
    job_ids = _job_ids(args)
    if job_ids:
        pipe.sadd(keys.worker_jobs(identity.node_name()), *job_ids)


broker_transport.on_receipt(_list_received)


def _job_ids(args: Any) -> list[str]:
    """The job ids a gpuq message's args carry: one for a job, a list for a group."""
    args = list(args or [])
    if not args:
        return []
    first = args[0]
    return [str(j) for j in first] if isinstance(first, (list, tuple)) else [str(first)]
