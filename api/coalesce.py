"""Coalescing single submits into group messages: concurrent ``POST /v1/jobs`` calls share one Celery message.

A job of a grouping kind (inference) submitted on its own is published together with the jobs of the same
kind, model, priority and queue that other requests are submitting at the same moment: the first of them
(the leader) waits up to ``GPUQ_SUBMIT_COALESCE_MS`` for company (or until ``GPUQ_GROUP_MAX_JOBS`` have
joined), then publishes one ``gpuq.run_group`` message for all, and every request answers once that message
is on the broker (a broker failure fails them all with 503, as it would have failed each). A leader with no
other submit in flight publishes at once, so a lone job pays no window. On the worker a group costs one
message, one claim and one finish round trip instead of one of each per job (worker/groups.py).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from gpuq.common.errors import ServiceUnavailable
from gpuq.common.jobs.registry import JobSpec


@dataclass
class _Pending:
    spec: JobSpec
    priority: str
    queue: str
    ids: list[str] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: ServiceUnavailable | None = None


class Coalescer:
    """Gathers concurrent submits into group messages; one per API process."""

    def __init__(self, window_s: float, max_jobs: int, publish_one: Callable[[str, JobSpec, str, str], None],
                 publish_group: Callable[[list[str], JobSpec, str, str], None]) -> None:
        self.window_s, self.max_jobs = window_s, max_jobs
        self._one, self._group = publish_one, publish_group
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str, str, str], _Pending] = {}
        self._submitting = 0

    def submitting(self) -> _Submitting:
        """Count a submit in flight for as long as the block runs (a leader waits only when others are)."""
        return _Submitting(self)

    def publish(self, job_id: str, spec: JobSpec, model: str, priority: str, queue: str) -> None:
        """Publish ``job_id`` in a group with concurrent submits; returns once its message is on the broker."""
        key = (spec.kind, model, priority, queue)
        with self._lock:
            pending = self._open.get(key)
            leader = pending is None
            if pending is None:
                pending = self._open[key] = _Pending(spec, priority, queue)
            pending.ids.append(job_id)
            full = len(pending.ids) >= self.max_jobs
            if full:
                self._open.pop(key, None)
            alone = leader and self._submitting <= 1
        if not leader:
            if full:
                pending.full.set()
            pending.done.wait()
        else:
            if not alone and not full:
                pending.full.wait(self.window_s)
            with self._lock:
                if self._open.get(key) is pending:
                    del self._open[key]
            try:
                if len(pending.ids) == 1:
                    self._one(pending.ids[0], spec, priority, queue)
                else:
                    self._group(pending.ids, spec, priority, queue)
            except ServiceUnavailable as exc:
                pending.error = exc
            finally:
                pending.done.set()
        if pending.error is not None:
            raise pending.error


class _Submitting:
    def __init__(self, owner: Coalescer) -> None:
        self.owner = owner

    def __enter__(self) -> None:
        with self.owner._lock:
            self.owner._submitting += 1

    def __exit__(self, *_: object) -> None:
        with self.owner._lock:
            self.owner._submitting -= 1
