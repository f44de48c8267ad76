"""Job handlers: one module per kind, implementing the Handler protocol."""
from __future__ import annotations

import importlib
from typing import Any, Protocol

from gpuq.worker.context import JobContext


class Handler(Protocol):
    """A job kind's implementation: run the job, return a JSON-serialisable result."""

    def run(self, ctx: JobContext) -> Any: ...


def get_handler(kind: str) -> Handler:
    """Import ``gpuq.worker.handlers.<kind>`` lazily (inside the process that runs jobs)."""
    module = importlib.import_module(f"gpuq.worker.handlers.{kind}")
    return module  # type: ignore[return-value]
