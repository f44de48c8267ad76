"""One generated sequence as the engine runs it, and the job-side handle its job waits on."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuq.worker.generation.sampling import Sampling
from gpuq.worker.generation.text import TextTracker

# Why a sequence ended. ``cancelled`` and ``timeout`` come from its job (cancel, drain, time limit).
STOP, LENGTH, CANCELLED, TIMEOUT = "stop", "length", "cancelled", "timeout"


@dataclass(eq=False)
class JobHandle:
    """What the engine knows of the job a sequence belongs to: how to wake it and whether it should stop."""

    job_id: str | None
    stop_reason: Callable[[], str | None] = lambda: None  # "cancelled" / "timeout" once the job must stop
    n: int = 1  # sequences per input (streamed events name their ``choice`` when more than one)
    waited: bool = False  # a sequence waited for capacity since the job's thread last reported
    abandoned: bool = False  # the job's thread gave up (its job is ending): stop, and stream nothing more
    event: threading.Event = field(default_factory=threading.Event)
    # Largest number of jobs and of sequences that shared a decode step with this job, and its steps.
    shared_jobs: int = 0
    shared_sequences: int = 0
    steps: int = 0

    def wake(self) -> None:
        """Tell the job's thread something changed (a sequence ended, waits for capacity, ...)."""
        self.event.set()


@dataclass(eq=False)
class Sequence:
    """A prompt, its settings, and (filled by the engine) its generated tokens and how it ended."""

    prompt: list[int]
    max_new_tokens: int
    sampling: Sampling
    job: JobHandle
    index: int = 0  # the input this sequence answers
    choice: int = 0  # which of the input's ``n`` sequences
    stream: bool = False
    adapter: str | None = None  # adapter name on the resident base (None: the base alone)
    rng: Any = None
    tracker: TextTracker | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    position: int = 0  # where its next key/value goes (= positions already cached)
    finish_reason: str | None = None
    error: BaseException | None = None
    waiting_for_capacity: bool = False
    joined_step: int = 0  # the engine's step count when it started running
    release: Callable[[], None] | None = None  # called once the engine is done with it (unpins its adapter)
    arrived: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None

    @property
    def need(self) -> int:
        """Cache positions the sequence can take at most (its prompt and every token it may generate)."""
        return len(self.prompt) + self.max_new_tokens

    @property
    def done(self) -> bool:
        """Whether it has ended (for any reason, an error included)."""
        return self.finish_reason is not None or self.error is not None
