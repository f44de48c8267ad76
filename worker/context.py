"""What a handler sees of its job: inputs, progress and cancellation, artifacts, resident models."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from common import events, keys
from common.errors import JobCancelled, JobTimeout
from common.records import JobStore
from common.schemas import ArtifactInfo
from common.settings import Settings
from common.storage import ArtifactStore
from worker.models import ModelKey, ResidentModels


@dataclass
class JobContext:
    """Per-job handle passed to a handler's ``run``."""

    job_id: str
    tenant: str
    kind: str
    model: str
    inputs: Any
    params: dict[str, Any]
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    store: ArtifactStore
    models: ResidentModels
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    model_load_ms: float = 0.0
    timings: dict[str, Any] = field(default_factory=dict)
    # Extra record fields written together with the terminal state (e.g. ``batch``).
    record_fields: dict[str, Any] = field(default_factory=dict)
    # Soft time limit (time.monotonic()) where no pool enforces one (threads): checked at progress points.
    deadline: float | None = None
    node: str | None = None

    def progress(self, done: int, total: int, **extra: Any) -> None:
        """Record progress, append a progress event and stop here if cancellation was requested."""
        data = {"done": done, "total": total, **extra}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.job(self.job_id), "progress", json.dumps(data))
        pipe.xadd(keys.events(self.job_id), {"type": "progress", "data": json.dumps(data)})
        pipe.hget(keys.job(self.job_id), "cancel_requested")
        if pipe.execute()[-1] == "1":
            raise JobCancelled("cancelled while running")
        self._check_deadline()

    def check_cancelled(self) -> None:
        """Raise JobCancelled when somebody asked this job to stop (JobTimeout past its soft time limit)."""
        if self.jobs.cancel_requested(self.job_id):
            raise JobCancelled("cancelled while running")
        self._check_deadline()

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise JobTimeout("job exceeded its time limit")

    def log(self, message: str, **extra: Any) -> None:
        """Append a log event."""
        events.append(self.redis, self.job_id, "log", {"message": message, **extra})

    def output(self, **data: Any) -> None:
        """Append an output event (e.g. streamed tokens)."""
        events.append(self.redis, self.job_id, "output", data)

    def put_artifact(self, name: str, data: bytes) -> ArtifactInfo:
        """Store bytes as an artifact of this job and list it in the record."""
        return self._remember(self.store.put_bytes(self.tenant, self.job_id, name, data))

    def put_artifact_file(self, name: str, path: Path) -> ArtifactInfo:
        """Store a file as an artifact of this job and list it in the record."""
        return self._remember(self.store.put_file(self.tenant, self.job_id, name, path))

    def _remember(self, info: ArtifactInfo) -> ArtifactInfo:
        self.artifacts = [a for a in self.artifacts if a.name != info.name] + [info]
        self.jobs.update(self.job_id, {"artifacts": [a.model_dump() for a in self.artifacts]})
        return info

    def resident(self, key: ModelKey, loader: Any, size_hint: Any = None) -> Any:
        """Fetch a model from the resident cache, adding its load time to the job's timings.

        ``size_hint`` (bytes, or a callable giving them, asked only on a miss) lets the cache refuse a model
        that cannot fit before loading it.
        """
        value, load_ms = self.models.get(key, loader, size_hint=size_hint)
        self.model_load_ms += load_ms
        return value


def now() -> float:
    """Wall clock used for record timings."""
    return time.time()
