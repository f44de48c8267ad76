"""The worker's entry module: the Celery app with everything a worker process runs wired in.

``gpuq worker`` (and so every image, compose service and manifest, which all run it) starts Celery from here:
importing this module registers the tasks (``tasks``), connects the lifecycle hooks (``signals``, ``preload``,
``metrics_server``) and tells the resident model cache to publish what it holds for affinity routing. Nothing
imports this module back, which keeps the worker's import graph acyclic; a process that only needs the app
(Flower, a producer) imports ``gpuq.worker.celery_app`` and gets none of it.
"""
from __future__ import annotations

from gpuq.worker import affinity, metrics_server, models, preload, signals, tasks
from gpuq.worker.celery_app import app, default_concurrency

models.on_change(affinity.publish_held)

__all__ = ["app", "default_concurrency", "metrics_server", "preload", "signals", "tasks"]
