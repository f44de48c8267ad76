"""``GET /metrics`` on the API: cluster-wide job and queue metrics, read from Redis at scrape time.

Nothing here is counted in the API's memory: counters live in Redis (common/stats.py, and the status
transition script in common/records.py), queue depths are read from the broker's lists. Every API
replica therefore reports the same values; aggregate them with ``max``, not ``sum``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import cast

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gpuq.common import keys, stats
from gpuq.common.queues import QueueLoad, queue_loads
from gpuq.common.redis_client import get_redis
from gpuq.common.scrape import guarded
from gpuq.common.settings import get_settings

router = APIRouter(tags=["health"])
# Heartbeats older than this are left out of the per-node series (worker names churn with every pod).
HEARTBEAT_HORIZON_S = 600.0


def _counter(name: str, doc: str, labels: list[str], series: dict[tuple[str, ...], int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, count in stats.labels_of(series, len(labels)):
        family.add_metric(values, count)
    return family


def _queue_gauges(loads: dict[str, QueueLoad]) -> Iterator[Metric]:
    specs: list[tuple[str, str, Callable[[QueueLoad], float]]] = [
             ("waiting", "Jobs waiting on the broker (all priority lists)", lambda q: q.waiting),
             ("running", "Jobs claimed by a worker and running", lambda q: q.running),
             ("load", "waiting + running: the autoscaling signal (KEDA divides it by its target)",
              lambda q: q.load),
             ("oldest_wait_seconds", "Age of the oldest waiting job", lambda q: q.oldest_wait_s)]
    for suffix, doc, value in specs:
        family = GaugeMetricFamily(f"gpuq_queue_{suffix}", doc, labels=["queue"])
        for name, load in loads.items():
            family.add_metric([name], value(load))
        yield family


def _wait_histograms(loads: dict[str, QueueLoad]) -> Metric:
    r = get_redis()
    family = HistogramMetricFamily("gpuq_queue_wait_seconds", "Queue wait (submitted -> started) of claimed "
                                   "jobs", labels=["queue"])
    for name in loads:
        data = stats.wait_histogram(name).read(r)
        buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in data.buckets]
        family.add_metric([name], buckets, data.total)
    return family


def _workers() -> Iterator[Metric]:
    r, settings, now = get_redis(), get_settings(), time.time()
    beats = cast(list[tuple[str, float]],
                 r.zrangebyscore(keys.workers(), now - HEARTBEAT_HORIZON_S, "+inf", withscores=True))
    alive = GaugeMetricFamily("gpuq_workers_alive", "Workers whose gpuq heartbeat is fresher than "
                              "GPUQ_WORKER_TTL_S")
    alive.add_metric([], sum(1 for _, ts in beats if ts >= now - settings.worker_ttl_s))
    yield alive
    last = GaugeMetricFamily("gpuq_worker_last_heartbeat_timestamp_seconds", "Unix time of each worker's "
                             "last heartbeat", labels=["node"])
    for node, ts in beats:
        last.add_metric([str(node)], ts)
    yield last
    dead = GaugeMetricFamily("gpuq_deadletter_jobs", "Jobs given up on after killing their worker too often")
    dead.add_metric([], r.zcard(keys.deadletter()))
    yield dead


class ClusterCollector(Collector):
    """Reads the whole cluster's job and queue state from Redis on every scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from guarded("gpuq_redis_up", self._collect)

    def _collect(self) -> Iterator[Metric]:
        counters = stats.read_counters(get_redis())
        yield _counter("gpuq_jobs_submitted", "Jobs accepted by the API", ["kind"],
                       counters.get("submitted", {}))
        yield _counter("gpuq_jobs_finished", "Jobs that reached a terminal status", ["kind", "status"],
                       counters.get("finished", {}))
        yield _counter("gpuq_jobs_failed", "Failed jobs by error type", ["kind", "error"],
                       counters.get("failed", {}))
        yield _counter("gpuq_jobs_requeued", "Running jobs put back on their queue (worker lost or shut "
                       "down)", ["kind"], counters.get("requeued", {}))
        loads = queue_loads(get_redis())
        yield from _queue_gauges(loads)
        yield _wait_histograms(loads)
        yield from _workers()


@lru_cache(maxsize=1)
def registry() -> CollectorRegistry:
    """The API's registry: the cluster collector plus this process's CPU and memory."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ClusterCollector())
    ProcessCollector(registry=reg)
    return reg


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
