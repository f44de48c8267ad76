"""Job progress as Celery task events, so Flower shows it.

Flower builds its task pages from Celery's event stream alone (gpuq runs without a result backend, so
``update_state`` would store nothing anyone reads). A custom ``task-progress`` event from the task makes
Celery's event state set the task's state to ``PROGRESS`` (a custom state ranks above STARTED and below
SUCCESS, so the final event still wins) and copies the event's fields onto the task. Flower 2.2 only
renders the standard fields, so the human-readable progress goes into ``result``, which its task list and
task page both display; the ``task-succeeded`` event replaces it with the final result when the job ends.

Only where task events are on (``GPUQ_TASK_EVENTS``): Celery's ``send_event`` publishes whatever the worker's
event settings say, so a worker told to send none would still publish one event per progress step.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from gpuq.common.settings import get_settings

log = logging.getLogger(__name__)


class ProgressEvents:
    """A ``JobContext.on_progress`` hook: sends ``task-progress``, at most once per ``interval_s``, when task
    events are on (``enabled``; default: the settings' ``task_events``)."""

    def __init__(self, interval_s: float, enabled: bool | None = None) -> None:
        self.interval_s = interval_s
        self.enabled = get_settings().task_events if enabled is None else enabled
        self._last = float("-inf")

    def __call__(self, progress: dict[str, Any]) -> None:
        if not self.enabled:
            return
        done, total = int(progress.get("done", 0)), int(progress.get("total", 0))
        now = time.monotonic()
        if done < total and now - self._last < self.interval_s:
            return
        self._last = now
        send_progress(done, total, progress)


def describe(done: int, total: int) -> str:
    """What Flower shows in the result column while the job runs."""
    pct = f" ({100 * done // total}%)" if total else ""
    return f"progress {done}/{total}{pct}"


def send_progress(done: int, total: int, progress: dict[str, Any]) -> None:
    """Send one ``task-progress`` event for the current Celery task; best effort."""
    from celery import current_task

    try:
        # current_task is a proxy: falsy outside a Celery task (a job run directly, a benchmark).
        if not current_task or not current_task.request.id or not current_task.request.hostname:
            return
        current_task.send_event("task-progress", retry=False, result=describe(done, total), progress=progress)
    except Exception as exc:  # noqa: BLE001 - monitoring must never fail a job
        log.debug("task-progress event not sent: %s", exc)
