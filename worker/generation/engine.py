"""The continuous-batching engine of one resident causal LM: a scheduler thread stepping every sequence at once.

Each step: sequences that must stop (their job was cancelled, drained or ran out of time) leave and free their
row; waiting sequences are admitted in arrival order while the KV cache can take them, up to
``prefill_tokens`` prompt tokens a step, and each is prefilled alone (so its first token is exactly the one
it would get alone); then one decode step runs every running sequence, whatever its prompt, length, sampling
settings, seed or adapter, and each leaves the step it ends (EOS, a stop string, ``max_new_tokens``).

Admission reserves a sequence's whole need up front (prompt + ``max_new_tokens`` positions), so a sequence
once admitted always finishes: nothing is preempted and the cache never outgrows its budget. The cache's
bytes are held in the resident-model cache's budget (``ResidentModels.hold``), so models and KV caches share
one accounting; a sequence that cannot fit waits (its job reports ``waiting_for_capacity``), and one larger
than the engine's whole cache is refused at once. The thread ends, and the cache is freed, after
``IDLE_S`` without work.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gpuq.common.errors import ResourceExhausted
from gpuq.worker.generation import steps
from gpuq.worker.generation.cache import Shape, SlotCache
from gpuq.worker.generation.metrics import METRICS
from gpuq.worker.generation.sequence import Sequence

log = logging.getLogger(__name__)
IDLE_S = 30.0
BLOCK = 16  # positions per block in the reported cache gauges
_ROUND = 64  # row lengths are allocated in multiples of this (fewer reallocations as sequences come and go)
MiB = 1 << 20
Emit = Callable[[list[tuple[str | None, dict[str, Any]]]], None]  # (job id, output event data) in order


@dataclass(frozen=True)
class Limits:
    """How much the engine may hold and do per step."""

    capacity_bytes: int  # the engine's whole KV cache
    max_sequences: int
    prefill_tokens: int


class Engine:
    """Runs sequences of one model; ``submit`` from any thread, the steps on the engine's own thread."""

    def __init__(self, model: Any, shape: Shape, limits: Limits, hold: Callable[[int], bool], attention: str,
                 eos: list[int], name: str, emit: Emit | None = None) -> None:
        self.model, self.shape, self.limits, self.hold = model, shape, limits, hold
        self.attention, self.eos, self.eos_set, self.name, self.emit = attention, eos, frozenset(eos), name, emit
        self.cache = SlotCache(shape)
        self.running: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        self.steps = 0
        self._incoming: list[Sequence] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._tokens = torch.zeros(0, dtype=torch.long, device=shape.device)
        self._positions = torch.zeros(0, dtype=torch.long, device=shape.device)
        self._jobs: dict[int, int] = {}  # id(job handle) -> its running sequences
        METRICS.register(self)

    @property
    def capacity_tokens(self) -> int:
        """Positions the whole cache holds (in one row)."""
        return self.limits.capacity_bytes // self.shape.bytes_per_token()

    def check_fits(self, seq: Sequence, field: str) -> None:
        """Refuse a sequence larger than the whole cache (it could never be admitted)."""
        need = _round(seq.need) * self.shape.bytes_per_token()
        if need > self.limits.capacity_bytes:
            raise ResourceExhausted(
                f"{field}: needs {seq.need} KV-cache positions ({len(seq.prompt)} prompt + {seq.max_new_tokens} "
                f"new tokens, {need / MiB:.1f} MiB) but this model's KV cache holds {self.capacity_tokens} "
                f"({self.limits.capacity_bytes / MiB:.1f} MiB, GPUQ_KV_CACHE_BUDGET)")

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue sequences; they join the running batch at the next step there is room."""
        with self._cond:
            self._incoming.extend(seqs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"gpuq-engine-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()

    def wake(self) -> None:
        """Look at stop requests now rather than at the end of the current step."""
        with self._cond:
            self._cond.notify()

    def busy(self) -> bool:
        """Whether sequences are running or waiting."""
        return bool(self.running or self.waiting or self._incoming)

    def gauges(self) -> tuple[int, int, int, int]:
        """(running sequences, waiting sequences, cache blocks allocated, blocks the budget allows)."""
        used = self.cache.rows * self.cache.positions // BLOCK
        return len(self.running), len(self.waiting) + len(self._incoming), used, self.capacity_tokens // BLOCK

    # --- the engine's thread ---

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while self._next():
                    pass
        except BaseException as exc:  # noqa: BLE001 - every waiting job must learn of it
            log.exception("generation engine %s failed", self.name)
            for seq in [*self.running, *self.waiting, *self._take()]:
                steps.fail(seq, exc)
                _released(seq)
            self.running.clear()
            self.waiting.clear()
        finally:
            self._free()
            with self._cond:
                self._thread = None
                if self._incoming:  # arrived while the thread was ending: start another
                    self.submit([])

    def _next(self) -> bool:
        """One scheduling round; False when the thread should end (idle)."""
        self.waiting.extend(self._take())
        self._stop_requested()
        self._admit()
        if self.running:
            self._decode()
            return True
        if self.waiting:  # none running and still none fits: the model cache is full; look again soon
            with self._cond:
                self._cond.wait(0.05)
            return True
        self._free()
        with self._cond:
            if not self._incoming:
                self._cond.wait(IDLE_S)
            return bool(self._incoming)

    def _take(self) -> list[Sequence]:
        with self._cond:
            taken, self._incoming = self._incoming, []
        return taken

    def _stop_requested(self) -> None:
        """Sequences whose job must stop leave now (their rows are free for this step's admissions)."""
        for seq in list(self.waiting):
            reason = seq.job.stop_reason()
            if reason is not None:
                self.waiting.remove(seq)
                steps.finish(seq, reason, self.emit)
                _released(seq)
        for row in range(len(self.running) - 1, -1, -1):
            reason = self.running[row].job.stop_reason()
            if reason is not None:
                steps.finish(self.running[row], reason, self.emit)
                self._leave(row)

    def _admit(self) -> None:
        budget = self.limits.prefill_tokens
        while self.waiting and len(self.running) < self.limits.max_sequences:
            seq = self.waiting[0]
            if budget < len(seq.prompt) and budget < self.limits.prefill_tokens:
                return  # this step's prefill budget is spent; the rest join at the next step
            if not self._room_for(seq):
                if not seq.waiting_for_capacity:
                    seq.waiting_for_capacity = seq.job.waited = True
                    seq.job.wake()
                return
            self.waiting.popleft()
            budget -= len(seq.prompt)
            if seq.waiting_for_capacity:
                seq.waiting_for_capacity = False
                seq.job.wake()
            self._prefill(seq)

    def _room_for(self, seq: Sequence) -> bool:
        """Make sure the cache has a row of ``seq.need`` positions for it (growing it if the budget allows)."""
        rows = len(self.running) + 1
        longest = _round(max([seq.need, *(s.need for s in self.running)]))
        if rows <= self.cache.rows and longest <= self.cache.positions:
            return True
        cap = self.limits.capacity_bytes
        roomy = (min(max(2 * self.cache.rows, rows), self.limits.max_sequences), max(longest, self.cache.positions))
        for want_rows, want_positions in (roomy, (rows, longest)):
            size = self.cache.nbytes(want_rows, want_positions)
            if size <= cap and self.hold(size):
                self._resize(want_rows, want_positions)
                return True
        return False

    def _resize(self, rows: int, positions: int) -> None:
        """Reallocate the cache (the caller holds the bytes for a larger one), keeping the running rows."""
        if (rows, positions) == (self.cache.rows, self.cache.positions):
            return
        filled = max((s.position for s in self.running), default=0)
        self.cache.resize(rows, positions, len(self.running), filled)
        tokens = torch.zeros(rows, dtype=torch.long, device=self.shape.device)
        places = torch.zeros(rows, dtype=torch.long, device=self.shape.device)
        n = min(len(self.running), rows)
        tokens[:n], places[:n] = self._tokens[:n], self._positions[:n]
        self._tokens, self._positions = tokens, places

    def _free(self) -> None:
        """Drop the whole cache and give its bytes back to the budget."""
        self._resize(0, 0)
        self.hold(0)

    def _prefill(self, seq: Sequence) -> None:
        row = len(self.running)
        try:
            logits = steps.prefill(self, seq, row)
            token = steps.choose(self, [seq], logits)[0]
        except Exception as exc:  # noqa: BLE001 - a prompt that fails fails its own job only
            steps.fail(seq, exc)
            _released(seq)
            return
        self.running.append(seq)
        self._tokens[row], self._positions[row] = token, seq.position
        self._joined(seq)
        METRICS.first_token(time.monotonic() - seq.arrived)
        if steps.accept(self, seq, token, time.monotonic()):
            self._leave(row)
        else:
            steps.stream(self, [seq])

    def _decode(self) -> None:
        rows = self.running
        started = time.monotonic()
        logits = steps.decode(self, len(rows))
        tokens = steps.choose(self, rows, logits)
        self.steps += 1
        self._tokens[:len(rows)] = torch.tensor(tokens, device=self._tokens.device)
        self._positions[:len(rows)] += 1
        now = time.monotonic()
        gaps, ended = [], []
        for row, (seq, token) in enumerate(zip(rows, tokens)):
            seq.position += 1
            gaps.append(now - (seq.last_token_at or started))
            if steps.accept(self, seq, token, now):
                ended.append(row)
        METRICS.step(len(rows), gaps)
        steps.stream(self, rows)
        for row in reversed(ended):
            self._leave(row)

    def _joined(self, seq: Sequence) -> None:
        seq.joined_step = self.steps
        key = id(seq.job)
        self._jobs[key] = self._jobs.get(key, 0) + 1
        jobs, seqs = len(self._jobs), len(self.running)
        for other in self.running:
            job = other.job
            job.shared_jobs, job.shared_sequences = max(job.shared_jobs, jobs), max(job.shared_sequences, seqs)

    def _leave(self, row: int) -> None:
        """Free ``row``: the last running sequence moves into it, so the running rows stay a prefix."""
        seq, last = self.running[row], len(self.running) - 1
        seq.job.steps = max(seq.job.steps, self.steps - seq.joined_step)
        if row != last:
            moved = self.running[last]
            self.cache.move(last, row, moved.position)
            self._tokens[row], self._positions[row] = self._tokens[last], self._positions[last]
            self.running[row] = moved
        self.running.pop()
        _released(seq)
        key = id(seq.job)
        self._jobs[key] -= 1
        if not self._jobs[key]:
            del self._jobs[key]


def _released(seq: Sequence) -> None:
    """The engine is done with ``seq`` (its adapter may go)."""
    release, seq.release = seq.release, None
    if release is not None:
        release()


def _round(positions: int) -> int:
    return -(-positions // _ROUND) * _ROUND
