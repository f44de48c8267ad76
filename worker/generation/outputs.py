"""Streamed text leaves the engine's thread at once: a pump thread writes it to the jobs' event streams.

A decode step must not wait for Redis. The engine hands each step's deltas over (a list append); the pump
writes whatever has gathered in one pipelined round trip, merging the deltas of one sequence that arrived
since its last write into one ``output`` event, so a slow Redis costs fewer, larger events rather than
slower steps. A job's thread ``flush``es before it writes its result, so every output event of a job comes
before its terminal one.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
Events = list[tuple[str | None, dict[str, Any]]]
FLUSH_TIMEOUT_S = 30.0


class OutputPump:
    """Queues (job id, output event) pairs and writes them in order on its own thread."""

    def __init__(self, write: Callable[[list[tuple[str, dict[str, Any]]]], None]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._queue: list[tuple[str, dict[str, Any]]] = []
        self._queued: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def put(self, events: Events) -> None:
        """Queue events (those without a job id are dropped: a sequence run outside a job)."""
        with self._cond:
            for job_id, data in events:
                if job_id is not None:
                    self._queued[job_id] = self._queued.get(job_id, 0) + 1
                    self._queue.append((job_id, data))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="gpuq-gen-outputs", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, job_id: str, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait until every event queued for ``job_id`` so far is written, then forget the job."""
        with self._cond:
            target = self._queued.get(job_id, 0)
            self._cond.wait_for(lambda: self._written.get(job_id, 0) >= target, timeout)
            if self._written.get(job_id, 0) >= self._queued.get(job_id, 0):
                self._queued.pop(job_id, None)
                self._written.pop(job_id, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue))
                batch, self._queue = self._queue, []
            try:
                self._write(merge(batch))
            except Exception as exc:  # noqa: BLE001 - the job finishes anyway; its stream lacks the text
                log.warning("could not write %d streamed outputs: %s", len(batch), exc)
            with self._cond:
                for job_id, _ in batch:
                    self._written[job_id] = self._written.get(job_id, 0) + 1
                self._cond.notify_all()


def merge(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """One event per sequence: its texts joined, its ``finish_reason`` kept (first-seen order)."""
    merged: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
    for job_id, data in events:
        key = (job_id, data.get("index"), data.get("choice"))
        seen = merged.get(key)
        if seen is None:
            merged[key] = (job_id, dict(data))
        else:
            seen[1]["text"] += data.get("text", "")
            if "finish_reason" in data:
                seen[1]["finish_reason"] = data["finish_reason"]
    return list(merged.values())


_PUMP: OutputPump | None = None
_LOCK = threading.Lock()


def get_pump() -> OutputPump:
    """The process's pump, writing with ``emit_outputs``."""
    global _PUMP
    with _LOCK:
        if _PUMP is None:
            from gpuq.worker.outputs import emit_outputs

            _PUMP = OutputPump(emit_outputs)
        return _PUMP
