"""Dynamic batching: concurrent jobs sharing (model, adapter, task, compatible params) run as one pass.

Design. The worker runs a Celery **threads** pool, so many jobs are in flight in one process, each on its own
thread with its own message, record and acknowledgement (Celery's per-message ack is untouched: a job's thread
acks after the job's own result is written). Each job thread ``submit``s its (prepared) inputs here and
blocks; one executor thread forms batches and runs them, like Ray Serve's ``@serve.batch`` but with threads:

- a batch holds requests of one key, at most ``max_items`` inputs; a request is never split (a job's own
  chunking into ``batch_size`` pieces happens before ``submit``), the oldest waiting key goes first;
- the executor runs a batch as soon as it is full, or when the oldest request has waited ``max_wait_s``, or at
  once when no job is on its way (``arriving()``: claimed by a thread but not yet submitted), so a lone job at
  low load does not pay the window;
- one executor thread (the default) means one forward pass at a time on the device, and while it runs the
  other threads claim, prepare and queue the next batch, which is why the pool should hold about twice
  ``max_batch_size`` threads; ``GPUQ_BATCH_EXECUTORS`` > 1 runs that many passes at once (a CPU worker with one
  intra-op thread per pass uses its cores better than one pass with several threads: the inter-op parallelism
  of Triton's model instances); passes that involve adapters on a model never overlap (worker/adapters.py);
- with several executors, the work left (when it fits in their passes) is shared evenly (whole requests each)
  with the executors that are idle or, failing those, will be free before half of it is done (judged by each
  key's measured time per input), so a lone group or the last requests of a burst finish in a fraction of
  the time instead of one core working while the others wait;
- if a merged pass raises, each request is retried alone, so one bad input fails only its own job.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# run(items, stream) -> one output per item; stream(deltas) takes {row of the pass: text} while generating.
RunFn = Callable[[list[Any], Callable[[dict[int, str]], None] | None], list[Any]]
EmitFn = Callable[[list[tuple[str, dict[str, Any]]]], None]
_POLL_S = 0.25  # waits are sliced so an asynchronous exception (the threads-pool watchdog) can land


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(frozen=True)
class Limits:
    """How big a batch may grow and how long its first request may wait for company."""

    max_items: int
    max_wait_s: float


@dataclass
class Request:
    """One job's chunk of inputs waiting for (then holding the outputs of) a forward pass."""

    key: Hashable
    items: list[Any]
    run: RunFn
    limits: Limits
    job_id: str | None
    first_index: int = 0  # index of items[0] among the job's inputs (for streamed output events)
    arrived: float = field(default_factory=time.monotonic)
    # A held lock released on completion: far cheaper to create per request than a threading.Event.
    done: Any = field(default_factory=_held_lock)
    finished: bool = False
    outputs: list[Any] | None = None
    error: BaseException | None = None
    jobs_in_pass: int = 0
    inputs_in_pass: int = 0
    abandoned: bool = False

    def complete(self) -> None:
        """Wake the job thread waiting for this request (once)."""
        if not self.finished:
            self.finished = True
            self.done.release()


@dataclass
class Arrival:
    """A job that will submit (again) soon; the executor waits for it rather than run a smaller batch."""

    active: bool = True


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    requests: int = 0
    largest: int = 0
    isolated: int = 0


class Batcher:
    """Gathers concurrent requests per key into forward passes run by one executor thread."""

    def __init__(self, emit_outputs: EmitFn | None = None, executors: int = 1) -> None:
        self.emit_outputs = emit_outputs
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[Request]] = {}
        self._arriving = 0
        self._shared: set[Hashable] = set()  # keys whose rest was left for other executors: run at once
        # Executors inside a pass: thread -> (key, inputs, started).
        self._running: dict[int, tuple[Hashable, int, float]] = {}
        self._per_input: dict[Hashable, float] = {}  # seconds per input of a key's passes (moving average)
        self._threads = [threading.Thread(target=self._loop, name=f"gpuq-batcher-{i}", daemon=True)
                         for i in range(executors)]
        for thread in self._threads:
            thread.start()

    @contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Mark a job as on its way to ``submit`` for as long as it has chunks left to submit."""
        token = Arrival()
        with self._cond:
            self._arriving += 1
        try:
            yield token
        finally:
            with self._cond:
                if token.active:
                    token.active = False
                    self._arriving -= 1
                    self._cond.notify()

    def submit(self, key: Hashable, items: list[Any], run: RunFn, limits: Limits, job_id: str | None = None,
               arrival: Arrival | None = None, more: bool = False, first_index: int = 0) -> Request:
        """Queue ``items`` under ``key``, block until their pass ran; raise the pass's error for this job."""
        request = self.enqueue(key, items, run, limits, job_id, arrival, first_index)
        try:
            self._wait(request)
        finally:
            if arrival is not None and more:
                with self._cond:
                    arrival.active = True
                    self._arriving += 1
        if request.error is not None:
            raise request.error
        return request

    def enqueue(self, key: Hashable, items: list[Any], run: RunFn, limits: Limits, job_id: str | None = None,
                arrival: Arrival | None = None, first_index: int = 0) -> Request:
        """Queue ``items`` under ``key`` without waiting (``wait`` collects the outcome)."""
        request = Request(key, list(items), run, limits, job_id, first_index)
        with self._cond:
            if arrival is not None and arrival.active:
                arrival.active = False
                self._arriving -= 1
            self._queues.setdefault(key, deque()).append(request)
            self._cond.notify()
        return request

    def wait(self, request: Request) -> Request:
        """Block until ``request``'s pass ran; raise the pass's error for it."""
        self._wait(request)
        if request.error is not None:
            raise request.error
        return request

    def _wait(self, request: Request) -> None:
        try:
            while not request.done.acquire(timeout=_POLL_S):
                pass
        except BaseException:
            self._abandon(request)
            raise

    def _abandon(self, request: Request) -> None:
        with self._cond:
            request.abandoned = True
            queue = self._queues.get(request.key)
            if queue is not None and request in queue:
                queue.remove(request)
                if not queue:
                    del self._queues[request.key]

    def pending(self) -> int:
        """Requests waiting for a pass."""
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._execute(batch)
                with self._cond:
                    key, inputs, started = self._running.pop(threading.get_ident())
                    self._measured(key, inputs, time.monotonic() - started)
                    self._cond.notify()
            except BaseException as exc:  # noqa: BLE001 - the executor thread must survive anything
                log.exception("batch execution failed unexpectedly")
                with self._cond:
                    self._running.pop(threading.get_ident(), None)
                for request in batch:
                    if not request.finished:
                        request.error = exc
                        request.complete()

    def _next_batch(self) -> list[Request]:
        with self._cond:
            while True:
                key, wait = self._ready_key()
                if key is not None:
                    return self._take(key)
                self._cond.wait(wait)

    def _ready_key(self) -> tuple[Hashable | None, float | None]:
        """A key to run now, else how long to wait (None: until notified). Called with the lock held."""
        if not self._queues:
            return None, None
        for key in self._shared:
            if key in self._queues:
                return key, None
        now = time.monotonic()
        oldest_key, oldest = None, float("inf")
        for key, queue in self._queues.items():
            if sum(len(r.items) for r in queue) >= queue[0].limits.max_items:
                return key, None
            if queue[0].arrived < oldest:
                oldest_key, oldest = key, queue[0].arrived
        deadline = oldest + self._queues[oldest_key][0].limits.max_wait_s
        # With several executors, one that is free while another runs a pass waits out the window for company
        # rather than start a small pass at once.
        if now >= deadline or (self._arriving <= 0 and not self._running):
            return oldest_key, None
        return None, deadline - now

    def _take(self, key: Hashable) -> list[Request]:
        """The next pass of ``key``'s requests, run by this executor from now (called with the lock held)."""
        queue = self._queues[key]
        limit = queue[0].limits.max_items
        self._shared.discard(key)
        if len(self._threads) > 1 and self._arriving <= 0:
            pending = sum(len(r.items) for r in queue)
            helpers = (len(self._threads) - len(self._running) - 1 or self._free_soon(key, min(pending, 2 * limit))
                       if pending > 1 else 0)
            if helpers and pending <= limit * (1 + helpers):
                limit = -(-pending // (1 + helpers))  # this pass's share; the rest is left to them
        batch: list[Request] = []
        count = 0
        while queue and (not batch or count + len(queue[0].items) <= limit):
            request = queue.popleft()
            batch.append(request)
            count += len(request.items)
        if not queue:
            del self._queues[key]
        elif limit < queue[0].limits.max_items:
            self._shared.add(key)
            self._cond.notify()
        self._running[threading.get_ident()] = (key, count, time.monotonic())
        return batch

    def _free_soon(self, key: Hashable, pending: int) -> int:
        """Busy executors that will be free before half of ``pending`` inputs of ``key`` are done."""
        now, soon = time.monotonic(), 0
        half = pending / 2 * self._per_input.get(key, 0.0)
        for other, inputs, started in self._running.values():
            rate = self._per_input.get(other)
            if rate is None or not half:  # nothing measured yet: compare sizes
                soon += 2 * inputs <= pending
            else:
                soon += inputs * rate - (now - started) <= half
        return soon

    def _measured(self, key: Hashable, inputs: int, seconds: float) -> None:
        """Fold a finished pass into the key's time per input (called with the lock held)."""
        rate = seconds / max(inputs, 1)
        before = self._per_input.get(key)
        self._per_input[key] = rate if before is None else 0.7 * before + 0.3 * rate

    def _execute(self, batch: list[Request]) -> None:
        items = [item for request in batch for item in request.items]
        try:
            outputs = batch[0].run(items, self._stream(batch))
            if len(outputs) != len(items):
                raise RuntimeError(f"task returned {len(outputs)} outputs for {len(items)} inputs")
        except Exception as exc:  # noqa: BLE001 - isolate, then fail only the request that fails alone
            if len(batch) > 1:
                log.warning("batch of %d requests failed (%s); running each alone", len(batch), exc)
                self.stats.isolated += 1
                for request in batch:
                    self._execute([request])
                return
            batch[0].error = exc
            batch[0].complete()
            return
        self._record(batch, len(items))
        start = 0
        for request in batch:
            request.outputs = outputs[start:start + len(request.items)]
            start += len(request.items)
            request.jobs_in_pass, request.inputs_in_pass = len(batch), len(items)
            request.complete()

    def _record(self, batch: list[Request], n_items: int) -> None:
        with self._cond:
            self._count(batch, n_items)

    def _count(self, batch: list[Request], n_items: int) -> None:
        self.stats.batches += 1
        self.stats.items += n_items
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, n_items)

    def _stream(self, batch: list[Request]) -> Callable[[dict[int, str]], None] | None:
        """Map rows of the pass back to (job, input index) and append ``output`` events in one round trip."""
        emit = self.emit_outputs
        if emit is None:
            return None
        rows = [(r.job_id, r.first_index + i) for r in batch for i in range(len(r.items))]

        def stream(deltas: dict[int, str]) -> None:
            events = [(rows[row][0], {"index": rows[row][1], "text": text})
                      for row, text in deltas.items() if rows[row][0] is not None]
            if events:
                emit(events)  # type: ignore[arg-type]
        return stream


_BATCHER: Batcher | None = None
_LOCK = threading.Lock()


def get_batcher() -> Batcher:
    """The process's batcher (its executor thread starts on first use, in the process that runs jobs)."""
    global _BATCHER
    with _LOCK:
        if _BATCHER is None:
            from gpuq.common.settings import get_settings
            from gpuq.worker.outputs import emit_outputs

            _BATCHER = Batcher(emit_outputs, get_settings().batch_executors)
        return _BATCHER
