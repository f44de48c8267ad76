"""Time limits for the threads pool, where Celery enforces none.

At the soft limit the watchdog raises ``SoftTimeLimitExceeded`` inside the job's thread (an asynchronous
exception: it lands at the thread's next Python bytecode, so a job blocked in native code, such as one long
forward pass, is interrupted only when that call returns; handlers' progress points also check the deadline).
At the hard limit (soft + grace) a job that is still running is failed in its record by the watchdog itself,
so the caller learns of the timeout; its thread, stuck in native code, keeps its pool slot until it returns (a
thread cannot be killed), and its late outcome is ignored because the record is already terminal. Both ends
go through ``outcome`` (the soft one as the exception the job's thread raises, the hard one as ``time_out``).
Use a prefork worker for work that can hang in native code for good.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

from gpuq.common.outage import OUTAGE_ERRORS, Outage
from gpuq.worker import outcome
from gpuq.worker.identity import node_name
from gpuq.worker.jobstore import job_store

log = logging.getLogger(__name__)
HARD_GRACE_S = 30.0
_TICK_S = 0.2


@dataclass
class _Watch:
    job_id: str
    queue: str
    thread_id: int
    soft_at: float
    hard_at: float
    soft_fired: bool = False
    jobs: tuple[str, ...] = ()  # the records to fail at the hard limit (default: ``job_id``'s)


class Watchdog:
    """One thread watching every running job's deadlines."""

    def __init__(self, grace_s: float = HARD_GRACE_S) -> None:
        self.grace_s = grace_s
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self.fired_soft = 0
        self.fired_hard = 0
        self._outage = Outage("watchdog", log)
        threading.Thread(target=self._loop, name="gpuq-watchdog", daemon=True).start()

    @contextmanager
    def watch(self, job_id: str, queue: str, soft_limit_s: float,
              hard_limit_s: float | None = None, jobs: list[str] | None = None) -> Iterator[None]:
        """Arm the job's deadlines for the duration of the block (the handler call); ``jobs`` names the
        records a watch over a group (``job_id`` is then the group's label) fails at the hard limit."""
        start = time.monotonic()
        hard = hard_limit_s if hard_limit_s and hard_limit_s > soft_limit_s else soft_limit_s + self.grace_s
        watch = _Watch(job_id, queue, threading.get_ident(), start + soft_limit_s, start + hard,
                       jobs=tuple(jobs or [job_id]))
        with self._lock:
            self._watches[job_id] = watch
        try:
            yield
        finally:
            # Taking the lock orders this with a firing: once it is released the exception cannot be sent any
            # more (one sent just before lands here, inside the runner's try, and is recorded as the timeout).
            with self._lock:
                self._watches.pop(job_id, None)

    def _loop(self) -> None:
        while True:
            time.sleep(_TICK_S)
            now = time.monotonic()
            with self._lock:
                due_soft = [w for w in self._watches.values() if not w.soft_fired and now >= w.soft_at]
                due_hard = [w for w in self._watches.values() if now >= w.hard_at]
                for watch in due_soft:
                    watch.soft_fired = True
                    self.fired_soft += 1
                    _raise_in(watch.thread_id)
                for watch in due_hard:
                    self._watches.pop(watch.job_id, None)
            for watch in due_hard:
                try:
                    self._fail(watch)
                    self._outage.ok()
                except OUTAGE_ERRORS as exc:  # Redis is down: fail the job at the next tick instead
                    self._outage.failed(exc)
                    with self._lock:
                        self._watches.setdefault(watch.job_id, watch)
                except Exception:  # noqa: BLE001 - the watchdog thread must outlive one bad failing
                    log.exception("watchdog could not fail job %s", watch.job_id)

    def _fail(self, watch: _Watch) -> None:
        self.fired_hard += 1
        log.error("job %s passed its hard time limit with its thread still busy; failing it", watch.job_id)
        # Not counted in the worker's job counts here: the stuck thread counts its job when it returns.
        outcome.time_out(job_store(), watch.jobs, watch.queue, "job exceeded its hard time limit; its worker "
                         "thread could not be interrupted (stuck in native code)", node_name())


def _raise_in(thread_id: int) -> None:
    """Schedule SoftTimeLimitExceeded in another thread (CPython's PyThreadState_SetAsyncExc)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                      ctypes.py_object(SoftTimeLimitExceeded))
    if done > 1:  # more than one thread state touched: undo, as the CPython docs require
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


_WATCHDOG: Watchdog | None = None
_LOCK = threading.Lock()


def get_watchdog() -> Watchdog:
    """The process's watchdog (started on first use)."""
    global _WATCHDOG
    with _LOCK:
        if _WATCHDOG is None:
            _WATCHDOG = Watchdog()
        return _WATCHDOG
