"""Inference tasks, one module each, looked up by name (aliases resolve to the task they name).

Every module of this package is imported here; a task module registers its task with
``base.register_task``. Aliases come from the task's params model (``gpuq.common.jobs.inference``), so
adding a task is its params class there and its module here; ``tests/worker/test_registries.py`` holds the
two registries against each other.
"""
from __future__ import annotations

import importlib
import pkgutil

from gpuq.common.jobs.inference import ALIASES
from gpuq.worker.inference.base import InferenceTask, LoadSpec, registered

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

TASKS: dict[str, InferenceTask] = registered()


def get_task(name: str) -> InferenceTask:
    """The task registered under ``name`` or an alias of it."""
    return TASKS[ALIASES.get(name, name)]


__all__ = ["ALIASES", "TASKS", "InferenceTask", "LoadSpec", "get_task"]
