"""What a handler sees of its job: inputs, typed params, progress, cancellation, artifacts, resident models.

``params`` is the kind's stored params model (``JobSpec.stored_model``), validated once from the record when
the context is built (``worker/runner.py``: ``make_context``): handlers read attributes, never the raw dict,
and never repeat a default the model already declares.

A claimed job's context is ``fenced``: every write it makes to the record and the stream (progress, log and
output events, artifacts and resolved sources) carries ``attempt`` and is refused inside its script once the
job has moved on to a later attempt (this one's lease lapsed, a worker cut off from Redis that kept running).
A refused write is logged once and dropped, and the job stops at its next progress point
(``AttemptSuperseded``: the outcome module writes nothing for it).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from pydantic import BaseModel

from gpuq.common import events, keys
from gpuq.common.errors import AttemptSuperseded, JobCancelled, JobInterrupted, JobTimeout
from gpuq.common.records import Fence, JobStore
from gpuq.common.schemas import ArtifactInfo
from gpuq.common.settings import Settings
from gpuq.common.storage import ArtifactStore
from gpuq.worker.identity import node_name, worker_id
from gpuq.worker.models import ModelKey, ResidentModels, get_cache
from gpuq.worker.progress_writer import writer_for

P = TypeVar("P", bound=BaseModel)
log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """Per-job handle passed to a handler's ``run``."""

    job_id: str
    tenant: str
    kind: str
    model: str
    inputs: Any
    params: BaseModel  # the kind's stored params model (see the module docstring)
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    store: ArtifactStore
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    model_load_ms: float = 0.0
    timings: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    last_progress: dict[str, Any] | None = None
    # Time spent reporting progress (events, cancellation checks, previews): recorded as timings.progress_ms.
    progress_ms: float = 0.0
    resolved: dict[str, Any] = field(default_factory=dict)
    on_progress: Callable[[dict[str, Any]], None] | None = None  # e.g. Celery task events for Flower
    # Extra record fields written together with the terminal state (e.g. ``batch``).
    record_fields: dict[str, Any] = field(default_factory=dict)
    # Soft time limit (time.monotonic()) where no pool enforces one (threads): checked at progress points.
    deadline: float | None = None
    node: str | None = None
    # The process's resident models; None: the shared cache, created on first use (creating it imports torch,
    # which a job without a model never needs, and which must not run under a job's soft time limit for nothing).
    models: ResidentModels | None = None
    # Writes carry ``attempt`` as their fence (a claimed job's context; see the module docstring).
    fenced: bool = False
    superseded: bool = False  # a write was refused: a later attempt holds the job (logged once)

    @property
    def fence(self) -> Fence | None:
        """What this context's writes are fenced by (None: unfenced)."""
        return Fence(self.attempt) if self.fenced else None

    def lost(self, what: str, now: str | None = None) -> None:
        """Note that this attempt's ``what`` was refused by its fence (the job is ``now`` under a later attempt,
        or ended): logged once at WARNING, then quietly."""
        if not self.superseded:
            log.warning("job %s: attempt %d no longer holds the job (now %s); its %s and anything it writes "
                        "later are dropped", self.job_id, self.attempt, now or "moved on", what)
        self.superseded = True

    def params_as(self, model: type[P]) -> P:
        """The params as ``model`` (the kind's stored model or a base of it); TypeError for another kind's."""
        if not isinstance(self.params, model):
            raise TypeError(f"{self.kind} job params are {type(self.params).__name__}, not {model.__name__}")
        return self.params

    def progress(self, done: int, total: int, **extra: Any) -> None:
        """Record progress, append a progress event and stop here if cancellation was requested."""
        begin = time.perf_counter()
        try:
            self._report(done, total, extra)
        finally:
            self.progress_ms += (time.perf_counter() - begin) * 1000
        self._check_deadline()

    def _report(self, done: int, total: int, extra: dict[str, Any]) -> None:
        data = {"done": done, "total": total, **extra}
        self.last_progress = data
        # Queued, not written here: worker/progress_writer.py writes it (in order) and keeps the flags fresh.
        flags = writer_for(self.redis).report(self.job_id, node_name(), json.dumps(data),
                                              self.attempt if self.fenced else None)
        if self.on_progress is not None:
            self.on_progress(data)
        if flags.superseded:
            self.lost("progress")
        if self.superseded:
            raise AttemptSuperseded(f"attempt {self.attempt} lost the job to a later attempt")
        if flags.error is not None:
            raise flags.error
        if flags.cancel:
            raise JobCancelled("cancelled while running")
        if flags.draining:
            raise JobInterrupted("worker is shutting down")

    def flush_progress(self) -> None:
        """Write the progress queued so far (before anything else goes to the job's stream)."""
        writer_for(self.redis).flush(self.job_id)

    def close_progress(self) -> None:
        """The job is done reporting: write what is queued (best effort) and stop watching its stream."""
        writer_for(self.redis).release(self.job_id)

    def draining(self) -> bool:
        """True when this worker was asked to shut down (handlers that checkpoint may check it)."""
        return bool(self.redis.exists(keys.draining(node_name())))

    def check_cancelled(self) -> None:
        """Raise JobCancelled when somebody asked this job to stop (JobTimeout past its soft time limit)."""
        if self.superseded:
            raise AttemptSuperseded(f"attempt {self.attempt} lost the job to a later attempt")
        if self.jobs.cancel_requested(self.job_id):
            raise JobCancelled("cancelled while running")
        self._check_deadline()

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise JobTimeout("job exceeded its time limit")

    def log(self, message: str, **extra: Any) -> None:
        """Append a log event (after the progress reported before it)."""
        self._append("log", {"message": message, **extra})

    def output(self, **data: Any) -> None:
        """Append an output event, e.g. streamed tokens (after the progress reported before it)."""
        self._append("output", data)

    def _append(self, type_: str, data: dict[str, Any]) -> None:
        self.flush_progress()
        fence = self.fence
        if fence is None:
            events.append(self.redis, self.job_id, type_, data)
            return
        done = self.jobs.transition(self.job_id, ["running"], {}, type_, data, fence=fence)  # one round trip
        if not done.applied:
            self.lost(f"{type_} event", done.previous)

    def before_side_effect(self, message: str) -> None:
        """Append a log event announcing an effect outside gpuq (a Hub push), only while this attempt still
        runs the job and this worker still holds its lease; raise ``AttemptSuperseded`` otherwise, so a stale
        attempt never starts it. The check is one atomic script (no extra round trip: the log is written
        anyway). What is left open: the lease may lapse after this check, during the effect itself (a long
        upload cut off from Redis); the next attempt then runs and performs it again, so an effect is done
        at most once per completed attempt plus at most once by an attempt that lost the job while doing it."""
        self.flush_progress()
        fence = self.fence
        if fence is None:
            events.append(self.redis, self.job_id, "log", {"message": message})
            return
        done = self.jobs.transition(self.job_id, ["running"], {}, "log", {"message": message},
                                    fence=Fence(fence.attempt, holder=worker_id()))
        if not done.applied:
            self.lost(f"side effect ({message})", done.previous)
            raise AttemptSuperseded(f"attempt {self.attempt} lost the job before: {message}")

    def put_artifact(self, name: str, data: bytes) -> ArtifactInfo:
        """Store bytes as an artifact of this job and list it in the record."""
        info = self.store.put_bytes(self.tenant, self.job_id, name, data)
        self._remember([info])
        return info

    def put_artifact_file(self, name: str, path: Path) -> ArtifactInfo:
        """Store a file as an artifact of this job and list it in the record."""
        info = self.store.put_file(self.tenant, self.job_id, name, path)
        self._remember([info])
        return info

    def put_artifact_dir(self, prefix: str, folder: Path) -> list[ArtifactInfo]:
        """Store every file under ``folder`` as ``prefix/<relative path>``, listing them in one record update."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        infos = [self.store.put_file(self.tenant, self.job_id, f"{prefix}/{p.relative_to(folder).as_posix()}", p)
                 for p in files]
        self._remember(infos)
        return infos

    def delete_artifacts(self, name: str) -> None:
        """Remove an artifact or a folder of them from the store and the record."""
        self.store.delete(self.tenant, self.job_id, name)
        self.artifacts = [a for a in self.artifacts if a.name != name and not a.name.startswith(name + "/")]
        self._update({"artifacts": [a.model_dump() for a in self.artifacts]})

    def _remember(self, infos: list[ArtifactInfo]) -> None:
        names = {i.name for i in infos}
        self.artifacts = [a for a in self.artifacts if a.name not in names] + infos
        self._update({"artifacts": [a.model_dump() for a in self.artifacts]})

    def pin(self, name: str, **info: Any) -> None:
        """Record a resolved source (a Hub repo at the commit sha it pointed at) in the job record."""
        self.resolved[name] = info
        self._update({"resolved": self.resolved})

    def _update(self, fields: dict[str, Any]) -> None:
        if not self.jobs.update(self.job_id, fields, fence=self.fence):
            self.lost(f"{', '.join(fields)} update")

    def resident(self, key: ModelKey, loader: Any, size_hint: Any = None) -> Any:
        """Fetch a model from the resident cache, adding its load time to the job's timings.

        ``size_hint`` (bytes, or a callable giving them, asked only on a miss) lets the cache refuse a model
        that cannot fit before loading it.
        """
        cache = self.models if self.models is not None else get_cache()
        value, load_ms = cache.get(key, loader, size_hint=size_hint)
        self.model_load_ms += load_ms
        return value


def now() -> float:
    """Wall clock used for record timings."""
    return time.time()
