"""Job handlers: one module per kind, named for it, implementing the Handler protocol.

The registry is this package: every module in it is the handler of the kind it is named for (found with
``pkgutil``, imported lazily inside the process that runs jobs, so a worker never imports the training or
diffusion stack before a job of that kind arrives). ``tests/worker/test_registries.py`` holds it against the
kind registry (``gpuq.common.jobs.registry``). A handler receives its kind's typed stored params on
``ctx.params`` (see ``worker/context.py``).
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Any, Protocol

from gpuq.common.errors import JobError
from gpuq.worker.context import JobContext


class Handler(Protocol):
    """A job kind's implementation: run the job, return a JSON-serialisable result."""

    def run(self, ctx: JobContext) -> Any: ...


@lru_cache(maxsize=1)
def handler_kinds() -> frozenset[str]:
    """Every kind with a handler module in this package."""
    return frozenset(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def get_handler(kind: str) -> Handler:
    """The handler module of ``kind`` (imported on first use)."""
    if kind not in handler_kinds():
        raise JobError(f"no handler for job kind {kind!r} on this worker")
    module = importlib.import_module(f"{__name__}.{kind}")
    return module  # type: ignore[return-value]
