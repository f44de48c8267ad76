"""Start-up work in the process that runs jobs: torch threading, and pinned models from ``GPUQ_PRELOAD``.

``GPUQ_PRELOAD`` lists ``task:model`` entries (``feature-extraction:sentence-transformers/all-MiniLM-L6-v2``);
each is loaded exactly as a job of that task would load it, then pinned: never evicted from the resident
cache.
"""
from __future__ import annotations

import logging
from functools import partial

from common.errors import ConfigError
from common.jobs.modelref import check_model_ref
from common.settings import get_settings

log = logging.getLogger(__name__)


def configure_torch() -> None:
    """Apply ``GPUQ_TORCH_THREADS`` (intra-op threads) before the first model runs."""
    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)


def parse_entry(entry: str) -> tuple[str, str]:
    """``task:model`` -> (task, model); refuses unknown tasks and models outside the allowed references."""
    from worker.inference import ALIASES, TASKS

    task, sep, model = entry.partition(":")
    if not sep or not model or ALIASES.get(task, task) not in TASKS:
        raise ConfigError(f"GPUQ_PRELOAD entry {entry!r}: expected task:model with task one of "
                          f"{sorted(TASKS)}", field="GPUQ_PRELOAD")
    return task, check_model_ref(model, get_settings().model_roots, field="GPUQ_PRELOAD")


def preload(entries: list[str]) -> None:
    """Load and pin every entry; a failure is logged and the worker serves anyway."""
    from worker.device import torch_dtype
    from worker.handlers.inference import model_key
    from worker.inference import LoadSpec, get_task
    from worker.models import get_cache
    from worker.sizing import estimate_bytes

    for entry in entries:
        try:
            name, model = parse_entry(entry)
            task, spec = get_task(name), LoadSpec(model, None, "auto")
            size = estimate_bytes(model, None, torch_dtype("auto").itemsize)
            get_cache().get(model_key(spec, task), partial(task.load, spec), size_hint=size, pin=True)
            log.info("preloaded and pinned %s for %s", model, name)
        except Exception as exc:  # noqa: BLE001 - a bad entry must not keep the worker from serving
            log.error("could not preload %r: %s", entry, exc)
