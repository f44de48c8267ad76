"""Progress reporting off the job's thread.

A job reports progress often (every denoising step, every training step, every chunk of inputs), and each
report used to be a Redis round trip on the job's own thread: record the progress, append the event, read
whether a cancel was asked for and whether the worker is draining. On a small CPU box that round trip cost
about 1 ms per step (Redis has to be woken up), on a GPU node across the network as much or more, and in
either case the device waited for it. Now a report only queues the event and looks at flags kept in memory:

- one **writer** thread per process sends queued events in pipelines, in order (a job's events keep the order
  they were reported in), and in the same pipeline reads each reporting job's cancel flag and the worker's
  draining flag;
- one **watcher** thread listens on the ``cancels`` pub/sub channel, where the API announces a running job's
  cancel right after setting its flag, so the flag turns on here within a millisecond: a cancel is seen at
  the first step that ends after it, as before, without a round trip per step. Every ``WATCH_S`` it also
  re-reads all flags, which covers a message lost while reconnecting and the worker's draining flag (set by
  its parent on SIGTERM).

Before anything else is written to a job's stream (a log or output event, its terminal event), its queued
progress is flushed, so the stream order is exactly the order of the calls. A Redis error while writing is
raised in the job's thread at its next report or flush, as a synchronous write would have raised it.

A report carries the attempt that made it: the write is fenced by it inside its script (``records.PROGRESS``),
so an attempt whose lease lapsed (a worker cut off from Redis that kept running) never writes progress over
the next attempt's; the refused write is dropped and the job's flags say ``superseded``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from gpuq.common import keys
from gpuq.common.outage import Outage
from gpuq.common.records import JobStore

log = logging.getLogger(__name__)

WATCH_S = 1.0
FLUSH_TIMEOUT_S = 30.0


@dataclass
class Flags:
    """What the job's thread needs to know after a report: stop (cancel), hand back (draining), or fail."""

    cancel: bool = False
    draining: bool = False
    error: BaseException | None = None
    superseded: bool = False  # a report was refused: a later attempt holds the job now


@dataclass
class _Job:
    node: str
    attempt: int | None = None  # what its writes are fenced by (None: unfenced)
    queued: int = 0  # sequence number of the job's last queued event
    written: int = 0  # ... and of its last event written (or given up on, with ``error``)


class ProgressWriter:
    """Queue progress events; write them, and watch for cancels, on two background threads."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self.jobs = JobStore(client)
        self.pid = os.getpid()
        self._cv = threading.Condition()
        self._queue: list[tuple[int, str, str]] = []  # (seq, job id, encoded progress)
        self._seq = 0
        self._jobs: dict[str, _Job] = {}
        self._flags: dict[str, Flags] = {}
        loops = (("gpuq-progress-writer", self._write_loop), ("gpuq-progress-watcher", self._watch_loop))
        for name, target in loops:
            threading.Thread(target=target, name=name, daemon=True).start()

    def report(self, job_id: str, node: str, encoded: str, attempt: int | None = None) -> Flags:
        """Queue one progress event, fenced by ``attempt`` (None: unfenced); return the flags as last read
        (raise nothing: the caller decides)."""
        with self._cv:
            self._seq += 1
            job = self._jobs.setdefault(job_id, _Job(node, attempt))
            job.queued = self._seq
            self._flags.setdefault(job_id, Flags())
            self._queue.append((self._seq, job_id, encoded))
            self._cv.notify_all()
            return self._flags[job_id]

    def flags(self, job_id: str) -> Flags:
        with self._cv:
            return self._flags.get(job_id) or Flags()

    def flush(self, job_id: str, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait until every event queued for the job is written; raise the error a write met, if any."""
        with self._cv:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if not self._cv.wait_for(lambda: job.written >= job.queued, timeout):
                raise redis.TimeoutError(f"progress events of job {job_id} not written within {timeout:g} s")
            flags = self._flags.get(job_id)
            error = flags.error if flags else None
        if error is not None:
            raise error

    def release(self, job_id: str) -> None:
        """Flush the job's events (best effort) and stop watching it."""
        try:
            self.flush(job_id)
        except redis.RedisError as exc:
            log.warning("progress events of job %s may be incomplete: %s", job_id, exc)
        with self._cv:
            self._jobs.pop(job_id, None)
            self._flags.pop(job_id, None)

    # --- background threads ---

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._queue))
                batch, self._queue = self._queue, []
                nodes = {job_id: self._jobs[job_id].node for _, job_id, _ in batch if job_id in self._jobs}
                attempts = {job_id: self._jobs[job_id].attempt for job_id in nodes}
            error: BaseException | None = None
            read: dict[str, Flags] = {}
            refused: set[str] = set()
            try:
                pipe = self.r.pipeline(transaction=False)
                answers = [self.jobs.queue_progress(pipe, job_id, encoded, attempts.get(job_id))
                           for _, job_id, encoded in batch]
                self._queue_flag_reads(pipe, nodes)
                values = pipe.execute(raise_on_error=False)
                refused = {job_id for (_, job_id, _), written, value in zip(batch, answers, values)
                           if not written(value)}
                read = self._parse_flags(_raised(values[len(batch):]), nodes)
            except redis.RedisError as exc:
                error = exc
            except Exception as exc:  # never let the writer die; the job sees the error
                log.exception("progress writer failed")
                error = exc
            with self._cv:
                for seq, job_id, _ in batch:
                    job = self._jobs.get(job_id)
                    if job is not None:
                        job.written = max(job.written, seq)
                    if error is not None and job_id in self._flags:
                        self._flags[job_id].error = error
                    if job_id in refused and job_id in self._flags:
                        self._flags[job_id].superseded = True
                self._apply(read)
                self._cv.notify_all()

    def _watch_loop(self) -> None:
        pubsub: Any = None
        refreshed = 0.0
        outage = Outage("progress watcher", log)
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._jobs))
            try:
                if pubsub is None:
                    pubsub = self.r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(keys.cancels())
                    refreshed = 0.0  # messages may have been missed while not subscribed
                message = pubsub.get_message(timeout=WATCH_S)
                if message is not None:
                    self._cancelled(str(message["data"]))
                if time.monotonic() - refreshed >= WATCH_S:
                    refreshed = time.monotonic()
                    self._refresh()
                outage.ok()
            except redis.RedisError as exc:
                _close(pubsub)
                pubsub = None
                outage.wait(exc)
            except Exception:  # keep watching
                log.exception("progress watcher failed")
                _close(pubsub)
                pubsub = None
                time.sleep(0.5)

    def _cancelled(self, job_id: str) -> None:
        with self._cv:
            flags = self._flags.get(job_id)
            if flags is not None:
                flags.cancel = True

    def _refresh(self) -> None:
        """Read every reporting job's flags (what a lost pub/sub message or draining would otherwise miss)."""
        with self._cv:
            nodes = {job_id: job.node for job_id, job in self._jobs.items()}
        if not nodes:
            return
        pipe = self.r.pipeline(transaction=False)
        self._queue_flag_reads(pipe, nodes)
        read = self._parse_flags(pipe.execute(), nodes)
        with self._cv:
            self._apply(read)

    @staticmethod
    def _queue_flag_reads(pipe: Any, nodes: dict[str, str]) -> None:
        for job_id, node in nodes.items():
            pipe.hget(keys.job(job_id), "cancel_requested")
            pipe.exists(keys.draining(node))

    @staticmethod
    def _parse_flags(values: list[Any], nodes: dict[str, str]) -> dict[str, Flags]:
        out = {}
        for i, job_id in enumerate(nodes):
            cancel, draining = values[2 * i], values[2 * i + 1]
            out[job_id] = Flags(cancel=str(cancel) == "1", draining=bool(draining))
        return out

    def _apply(self, read: dict[str, Flags]) -> None:
        for job_id, seen in read.items():
            flags = self._flags.get(job_id)
            if flags is not None:
                # Flags only ever turn on while a job runs (a cancel is never withdrawn).
                flags.cancel = flags.cancel or seen.cancel
                flags.draining = flags.draining or seen.draining


def _raised(values: list[Any]) -> list[Any]:
    """``values`` as a pipeline run with ``raise_on_error=True`` would have answered them."""
    for value in values:
        if isinstance(value, Exception):
            raise value
    return values


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception as exc:  # noqa: BLE001 - already broken; a new subscription replaces it
            log.debug("closing a broken pub/sub connection: %s", exc)


_WRITERS: dict[int, ProgressWriter] = {}
_LOCK = threading.Lock()


def writer_for(client: redis.Redis) -> ProgressWriter:
    """The process's writer for ``client`` (a fresh one after a fork: threads do not survive it)."""
    with _LOCK:
        found = _WRITERS.get(id(client))
        if found is None or found.pid != os.getpid():
            found = _WRITERS[id(client)] = ProgressWriter(client)
        return found
