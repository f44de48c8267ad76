"""The Celery application for gpuq workers.

Pool choice: **prefork with concurrency 1 per GPU**. The parent process never imports torch or loads a
model (CUDA state does not survive ``fork``); it forks one child, and models load lazily inside that child
on its first job and stay resident for its lifetime (no ``max_tasks_per_child``). Prefork is also the
pool in which Celery enforces hard time limits: a hung job's child is killed and replaced by the parent,
which is what a GPU worker needs to recover. Scale out with one worker process per GPU
(``CUDA_VISIBLE_DEVICES``), not with more pool slots.
"""
from __future__ import annotations

from celery import Celery

from common.celery_config import celery_config, check_visibility_timeout
from common.settings import get_settings


def create_app() -> Celery:
    """Build the worker app from settings, refusing unsafe visibility timeouts."""
    settings = get_settings()
    check_visibility_timeout(settings)
    app = Celery("gpuq")
    app.conf.update(celery_config(settings))
    app.conf.worker_pool = "prefork"
    app.conf.worker_concurrency = 1
    return app


app = create_app()

from worker import metrics_server, preload, signals, tasks  # noqa: E402,F401  (the task and the signal handlers)
