"""Counters and histograms kept in Redis rather than in one process's memory.

The API runs several replicas and a worker runs its jobs in a pool child that can be replaced; a metric
held in process memory would differ per replica and reset with each child. Writers increment Redis
hashes; ``/metrics`` handlers read them at scrape time, so every replica reports the same monotonic value.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from gpuq.common import keys

# Seconds. Queue waits range from milliseconds (idle GPU) to hours (a backlog of fine-tunes).
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
# Seconds of handler run time: embeddings take milliseconds, fine-tunes hours.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
               7200.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class HistogramData:
    """A histogram read back from Redis: cumulative ``(upper bound, count)`` pairs ending in +Inf."""

    buckets: list[tuple[float, int]]
    total: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


class RedisHistogram:
    """A Prometheus-style histogram stored as one hash: one field per bucket, plus ``sum``."""

    def __init__(self, key: str, bounds: Sequence[float]) -> None:
        self.key = key
        self.bounds = tuple(bounds)

    def observe(self, pipe: Any, value: float, ttl_s: int | None = None) -> None:
        """Queue the increments for one observation on ``pipe`` (a pipeline or a client)."""
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        pipe.hincrby(self.key, str(index), 1)
        pipe.hincrbyfloat(self.key, "sum", float(value))
        if ttl_s:
            pipe.expire(self.key, ttl_s)

    def observe_many(self, pipe: Any, values: Sequence[float], ttl_s: int | None = None) -> None:
        """Queue several observations as one increment per bucket touched (a group's jobs)."""
        if not values:
            return
        counts: dict[int, int] = {}
        for value in values:
            index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
            counts[index] = counts.get(index, 0) + 1
        for index, n in counts.items():
            pipe.hincrby(self.key, str(index), n)
        pipe.hincrbyfloat(self.key, "sum", float(sum(values)))
        if ttl_s:
            pipe.expire(self.key, ttl_s)

    def parse(self, raw: dict[str, str]) -> HistogramData:
        """Cumulative buckets from a hash read with HGETALL."""
        running, out = 0, []
        for i, bound in enumerate([*self.bounds, math.inf]):
            running += int(raw.get(str(i), 0))
            out.append((bound, running))
        return HistogramData(out, float(raw.get("sum", 0.0)))

    def read(self, client: redis.Redis) -> HistogramData:
        """Read and parse in one call."""
        return self.parse(cast(dict[str, str], client.hgetall(self.key)))


def wait_histogram(queue: str) -> RedisHistogram:
    """Queue wait (submit -> start) of jobs claimed from ``queue``."""
    return RedisHistogram(keys.wait_histogram(queue), WAIT_BUCKETS)


def count_submitted(client: redis.Redis, kind: str, jobs: int = 1) -> None:
    """Count accepted jobs (called once they are on the broker)."""
    client.hincrby(keys.stats(), f"submitted|{kind}", jobs)


def read_counters(client: redis.Redis) -> dict[str, dict[tuple[str, ...], int]]:
    """The job counters by family: ``{"finished": {(kind, status): n}, ...}``.

    ``finished``, ``failed`` and ``requeued`` are written inside the status-transition script
    (common/records.py), so each terminal transition is counted exactly once.
    """
    out: dict[str, dict[tuple[str, ...], int]] = {}
    for field, value in client.hgetall(keys.stats()).items():
        family, *labels = str(field).split("|")
        out.setdefault(family, {})[tuple(labels)] = int(value)
    return out


def labels_of(series: dict[tuple[str, ...], int], width: int) -> Iterable[tuple[list[str], int]]:
    """Series whose label tuple has exactly ``width`` parts (anything else is ignored as malformed)."""
    for labels, value in sorted(series.items()):
        if len(labels) == width:
            yield list(labels), value
