"""``GPUQ_PRELOAD``: load models into the pool child's resident cache before the worker reports healthy.

Entries are ``task=model`` (``text-classification=/models/sst2``), ``task:model`` (the same) or a bare
``model``, which preloads it for ``feature-extraction``. The handler that can preload ``task`` loads it (a handler module opts in with
``PRELOAD_TASKS`` and ``preload(model, task)``; the inference handler does today), under the cache key a
job with default ``dtype`` and ``revision`` uses, so the first such job is a cache hit.

Loading runs on a thread in the pool child: billiard kills a child whose start-up hook blocks for more
than a few seconds, and a big model takes minutes. A job that arrives meanwhile waits on the cache's lock
for the same model, or runs if it needs another. The child publishes ``preload`` = ``loading`` /
``done`` / ``failed`` with the worker's boot id, and the parent's ``/healthz`` waits for ``done`` of its
own boot (a restarted worker must not pass on its previous life's state). A threads-pool worker
runs jobs in its main process, so it starts the same loading there. Preloaded models are pinned: the
resident cache's memory budget never evicts them.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import signals

from gpuq.common.jobs.modelref import check_model_ref
from gpuq.common.jobs.registry import all_specs
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import get_settings
from gpuq.worker import identity
from gpuq.worker.handlers import get_handler
from gpuq.worker.identity import boot_id

log = logging.getLogger(__name__)
DEFAULT_TASK = "feature-extraction"


def parse(entries: list[str]) -> list[tuple[str, str]]:
    """``task=model``, ``task:model`` or ``model`` -> [(task, model)]."""
    out = []
    for entry in entries:
        task, sep, model = entry.partition("=")
        if not sep:
            task, sep, model = entry.partition(":")
            sep = sep if sep and "/" not in task else ""  # a task name has no slash; a path or Hub id may
        out.append((task.strip(), model.strip()) if sep else (DEFAULT_TASK, entry.strip()))
    return out


def configure_torch() -> None:
    """Apply ``GPUQ_TORCH_THREADS`` (intra-op threads) before the first model runs."""
    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)


@signals.celeryd_init.connect
def _new_boot(**_: Any) -> None:
    identity.new_boot()


@signals.worker_process_init.connect
def _start_preload(**_: Any) -> None:
    start_preload()


def start_preload(wait: bool = False) -> None:
    """In the process that runs jobs (a prefork child; a threads worker itself): torch set-up, then preload;
    ``wait``: load before returning (a threads worker preloads before it announces itself, so affinity routing
    never sends it jobs for a model it is still loading)."""
    configure_torch()
    entries = get_settings().preload
    if entries and wait:
        preload_all(entries)
        return
    if entries:
        threading.Thread(target=preload_all, args=(entries,), name="gpuq-preload", daemon=True).start()


def preloader(task: str) -> Callable[[str, str], None]:
    """The ``preload`` of the handler that declares ``task`` in its ``PRELOAD_TASKS``."""
    for kind in sorted({spec.kind for spec in all_specs()}):
        handler = get_handler(kind)
        if task in getattr(handler, "PRELOAD_TASKS", ()):
            return handler.preload  # type: ignore[attr-defined,no-any-return]
    raise ValueError(f"GPUQ_PRELOAD: no job kind can preload task {task!r}")


def preload_all(entries: list[str]) -> None:
    """Load every entry; publish the outcome for the parent's health check."""
    from gpuq.worker import telemetry

    r = get_redis()
    telemetry.publish_state(r, preload="loading", preload_boot=boot_id(), preload_error="")
    try:
        for task, model in parse(entries):
            preloader(task)(check_model_ref(model, get_settings(), field="GPUQ_PRELOAD"), task)
            log.info("preloaded %s for %s", model, task)
    except Exception as exc:  # noqa: BLE001 - reported through /healthz; the worker keeps serving
        log.error("preload failed: %s", exc)
        telemetry.publish_state(r, preload="failed", preload_boot=boot_id(), preload_error=str(exc)[:300])
        return
    telemetry.publish_state(r, preload="done", preload_boot=boot_id(), preload_error="")
