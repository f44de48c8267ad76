"""The worker's ``/metrics``, ``/healthz`` and ``/livez``, served from the Celery parent process.

A small threaded HTTP server on ``GPUQ_WORKER_METRICS_PORT`` (0 turns it off), started when the worker
is ready. The parent never imports torch: what the pool child knows (run times, batch sizes, the model
cache, device memory, preload) it publishes to Redis (worker/telemetry.py), and the collector here reads
it back at scrape time, next to the parent's own heartbeat.

- ``/healthz``: 200 when the last gpuq heartbeat reached Redis within ``GPUQ_WORKER_TTL_S`` and, with
  ``GPUQ_PRELOAD``, this boot's preload is done. For startup and readiness probes.
- ``/livez``: 200 while the heartbeat thread runs, even when Redis is down. For liveness probes: a
  Redis outage must not make Kubernetes restart every GPU worker and throw their resident models away.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import signals
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gpuq.common import keys
from gpuq.common.jobs.registry import all_specs
from gpuq.common.redis_client import get_redis
from gpuq.common.scrape import guarded
from gpuq.common.settings import get_settings
from gpuq.common.stats import HistogramData
from gpuq.worker.generation.metrics import itl_histogram, ttft_histogram
from gpuq.worker.identity import boot_id, node_name
from gpuq.worker.telemetry import CACHE_COUNTERS, batch_histogram, run_histogram

log = logging.getLogger(__name__)


@dataclass
class Heartbeat:
    """The parent's heartbeat, as the heartbeat thread in worker/signals.py last saw it."""

    last_ok: float = 0.0
    last_error: str = ""
    thread: threading.Thread | None = None

    def beat(self, ok: bool, error: str = "") -> None:
        if ok:
            self.last_ok = time.time()
        self.last_error = error

    def age(self) -> float:
        return time.time() - self.last_ok if self.last_ok else float("inf")


HEARTBEAT = Heartbeat()
_server: ThreadingHTTPServer | None = None


def health() -> tuple[int, dict[str, Any]]:
    """(status code, body) for ``/healthz``."""
    settings = get_settings()
    age = HEARTBEAT.age()
    body: dict[str, Any] = {"node": node_name(), "heartbeat_age_s": round(age, 3) if age != float("inf") else None}
    problems = []
    if age > settings.worker_ttl_s:
        problems.append(f"no heartbeat reached Redis for {age:.0f}s ({HEARTBEAT.last_error or 'not yet'})")
    if settings.preload:
        state = _preload_state()
        body["preload"] = state
        if state != "done":
            problems.append(f"preload {state}")
    body["status"] = "ok" if not problems else "unhealthy"
    if problems:
        body["problems"] = problems
    return (200 if not problems else 503), body


def _preload_state() -> str:
    try:
        fields = get_redis().hmget(keys.worker_stats(node_name()), ["preload", "preload_boot", "preload_error"])
    except Exception as exc:  # noqa: BLE001
        return f"unknown (redis: {type(exc).__name__})"
    state, boot, error = fields
    if boot != boot_id() or not state:
        return "pending"
    return f"failed: {error}" if state == "failed" else str(state)


def liveness() -> tuple[int, dict[str, Any]]:
    """(status code, body) for ``/livez``: the heartbeat thread is running."""
    alive = HEARTBEAT.thread is not None and HEARTBEAT.thread.is_alive()
    return (200 if alive else 503), {"status": "ok" if alive else "heartbeat thread stopped", "node": node_name()}


def _histogram(family: HistogramMetricFamily, labels: list[str], data: HistogramData) -> None:
    buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in data.buckets]
    family.add_metric(labels, buckets, data.total)


class WorkerCollector(Collector):
    """This node's telemetry, read from Redis on every scrape, plus the parent's heartbeat."""

    def collect(self) -> Iterator[Metric]:
        beat = GaugeMetricFamily("gpuq_worker_heartbeat_timestamp_seconds",
                                 "Unix time the last gpuq heartbeat reached Redis", labels=["node"])
        beat.add_metric([node_name()], HEARTBEAT.last_ok)
        yield beat
        yield from guarded("gpuq_worker_redis_up", self._from_redis)

    def _from_redis(self) -> Iterator[Metric]:
        r, name = get_redis(), node_name()
        raw = r.hgetall(keys.worker_stats(name))
        jobs = CounterMetricFamily("gpuq_worker_jobs", "Jobs this worker ran, by outcome",
                                   labels=["kind", "status"])
        for field, value in sorted(raw.items()):
            parts = field.split("|")
            if parts[0] == "jobs" and len(parts) == 3:
                jobs.add_metric(parts[1:], int(value))
        yield jobs
        run = HistogramMetricFamily("gpuq_worker_job_run_seconds", "Handler run time (model loading "
                                    "excluded)", labels=["kind"])
        for kind in sorted({s.kind for s in all_specs()}):
            _histogram(run, [kind], run_histogram(name, kind).read(r))
        yield run
        batch = HistogramMetricFamily("gpuq_worker_batch_size", "Inputs per forward batch")
        _histogram(batch, [], batch_histogram(name).read(r))
        yield batch
        yield from _cache_and_device(raw)
        yield from _generation(r, name, raw)


def _cache_and_device(raw: dict[str, str]) -> Iterator[Metric]:
    docs = {"hits": "Model cache hits", "misses": "Model cache misses (loads)",
            "evictions": "Models evicted from the cache", "load_seconds": "Seconds spent loading models"}
    for name in CACHE_COUNTERS:
        family = CounterMetricFamily(f"gpuq_worker_model_cache_{name}" if name != "load_seconds"
                                     else "gpuq_worker_model_load_seconds", docs[name])
        family.add_metric([], float(raw.get(f"cache_{name}", 0)))
        yield family
    gauges = [("resident_models", "gpuq_worker_resident_models", "Models resident in the cache", []),
              ("device_memory_used_bytes", "gpuq_worker_device_memory_used_bytes",
               "Device memory held by tensors (GPU) or the job process's RSS (CPU)", ["device"]),
              ("device_memory_total_bytes", "gpuq_worker_device_memory_total_bytes", "Device memory in total",
               ["device"]),
              ("device_memory_budget_bytes", "gpuq_worker_device_memory_budget_bytes",
               "Memory the model cache may use (the device total when no budget is set)", ["device"])]
    for field, metric, doc, labels in gauges:
        family = GaugeMetricFamily(metric, doc, labels=labels)
        if field in raw:
            family.add_metric([raw.get("device", "cpu")] if labels else [], float(raw[field]))
        yield family
    preload = GaugeMetricFamily("gpuq_worker_preload_done", "1 when GPUQ_PRELOAD finished in this boot")
    done = raw.get("preload") == "done" and raw.get("preload_boot") == boot_id()
    preload.add_metric([], 1.0 if done else 0.0)
    yield preload


def _generation(r: Any, name: str, raw: dict[str, str]) -> Iterator[Metric]:
    """The continuous-batching engines' gauges, token count and latency histograms."""
    seqs = GaugeMetricFamily("gpuq_worker_generation_sequences", "Sequences in the generation engines",
                             labels=["state"])
    blocks = GaugeMetricFamily("gpuq_worker_kv_cache_blocks", "KV-cache blocks (16 positions of one row)",
                               labels=["state"])
    for family, prefix, states in ((seqs, "gen_", ("running", "waiting")), (blocks, "kv_blocks_", ("used", "free"))):
        for state in states:
            family.add_metric([state], float(raw.get(prefix + state, 0)))
        yield family
    rate = GaugeMetricFamily("gpuq_worker_generation_tokens_per_second",
                             "Tokens generated per second over the last 10 s")
    rate.add_metric([], float(raw.get("gen_tokens_per_s", 0)))
    yield rate
    tokens = CounterMetricFamily("gpuq_worker_generation_tokens", "Tokens the generation engines generated")
    tokens.add_metric([], float(raw.get("gen_tokens", 0)))
    yield tokens
    for metric, doc, hist in (
            ("gpuq_worker_generation_time_to_first_token_seconds", "From reaching the engine to the first token",
             ttft_histogram),
            ("gpuq_worker_generation_inter_token_latency_seconds", "Between consecutive tokens of a sequence",
             itl_histogram)):
        family = HistogramMetricFamily(metric, doc)
        _histogram(family, [], hist(name).read(r))
        yield family


def registry() -> CollectorRegistry:
    """The worker's registry: its telemetry plus the parent process's CPU and memory."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(WorkerCollector())
    ProcessCollector(registry=reg)
    return reg


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/livez"):
            code, body = health() if path == "/healthz" else liveness()
            self._send(code, json.dumps(body).encode(), "application/json")
        else:
            self._send(404, b'{"error": "not found"}', "application/json")

    def _send(self, code: int, payload: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - probes every few seconds
        return


def start(host: str, port: int) -> ThreadingHTTPServer:
    """Serve in a daemon thread; returns the server (its port is the bound one when ``port`` is 0)."""
    handler = type("Handler", (_Handler,), {"registry": registry()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="gpuq-metrics", daemon=True).start()
    return server


@signals.worker_ready.connect
def _start_server(**_: Any) -> None:
    global _server
    settings = get_settings()
    if not settings.worker_metrics_port:
        return
    try:
        _server = start(settings.worker_metrics_host, settings.worker_metrics_port)
    except OSError as exc:  # a taken port must not stop the worker from serving jobs
        log.error("worker metrics server not started on %s:%s: %s", settings.worker_metrics_host,
                  settings.worker_metrics_port, exc)
        return
    log.info("worker metrics on http://%s:%s/metrics", settings.worker_metrics_host,
             settings.worker_metrics_port)


@signals.worker_shutdown.connect
def _stop_server(**_: Any) -> None:
    if _server is not None:
        _server.shutdown()
