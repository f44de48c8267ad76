"""The Celery application for gpuq workers.

Pool choice, per worker (``gpuq worker --pool``, ``GPUQ_WORKER_POOL``):

- **prefork, concurrency 1 per GPU** (default; image and fine-tune workers). The parent process never imports
  torch or loads a model (CUDA state does not survive ``fork``); it forks one child, and models load lazily
  inside that child and stay resident for its lifetime (no ``max_tasks_per_child``). Prefork is the pool in
  which Celery enforces hard time limits: a hung job's child is killed and replaced by the parent.
- **threads** (inference workers: ``--pool threads``, concurrency default 2 x ``GPUQ_BATCH_MAX_SIZE``). Many
  jobs are in flight in one process, so the dynamic batcher (``worker/batching.py``) can run concurrent jobs
  for the same model as one forward pass while each job keeps its own message and acknowledgement. There is
  no fork, so CUDA is used from this process. Celery enforces no time limits here; gpuq's watchdog
  (``worker/watchdog.py``) does, with the limits the message carries.

Scale out with one worker process per GPU (``CUDA_VISIBLE_DEVICES``).

This module builds the app and imports no other worker module: Flower and producers import it without the
tasks, handlers or signal hooks. A worker process starts from ``gpuq.worker.main``, which wires those in.
"""
from __future__ import annotations

from celery import Celery

from gpuq.common import broker_transport
from gpuq.common.celery_config import celery_config, check_visibility_timeout
from gpuq.common.settings import Settings, get_settings


def default_concurrency(pool: str, settings: Settings) -> int:
    """Threads: enough to fill one batch while the previous one runs; otherwise one job at a time."""
    if settings.worker_concurrency:
        return settings.worker_concurrency
    return 2 * settings.batch_max_size if pool == "threads" else 1


def create_app() -> Celery:
    """Build the worker app from settings, refusing unsafe visibility timeouts."""
    broker_transport.install()
    settings = get_settings()
    check_visibility_timeout(settings)
    app = Celery("gpuq")
    app.conf.update(celery_config(settings))
    app.conf.worker_pool = settings.worker_pool
    app.conf.worker_concurrency = default_concurrency(settings.worker_pool, settings)
    return app


app = create_app()
