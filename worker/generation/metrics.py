"""What the engines of this process report: gauges, token counts, first-token and inter-token latencies.

Engines note numbers in memory as they go (a few list appends per step); ``publish`` turns them into the
worker's Redis telemetry (worker/telemetry.py), which the metrics server in the worker's parent reads at
scrape time. It runs after every job, as the rest of the telemetry does, and every second while an engine is
busy, so gauges stay fresh during long generations. No torch here: telemetry imports this module.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from typing import Any, Protocol

from gpuq.common import keys
from gpuq.common.stats import RedisHistogram

log = logging.getLogger(__name__)
# Seconds. First tokens take a prefill (milliseconds to seconds, more when waiting for capacity); the
# tokens after it a decode step each.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RATE_WINDOW_S = 10.0
TTL_S = 7 * 86400


class Gauged(Protocol):
    """An engine, as the gauges see it."""

    def gauges(self) -> tuple[int, int, int, int]: ...  # running, waiting, blocks used, blocks total


class GenerationMetrics:
    """Numbers of every engine in this process, waiting to be published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: weakref.WeakSet[Any] = weakref.WeakSet()
        self._ttft: list[float] = []
        self._itl: list[float] = []
        self._tokens = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._publisher: threading.Thread | None = None

    def register(self, engine: Gauged) -> None:
        """Count ``engine``'s sequences and blocks in the gauges from now on."""
        with self._lock:
            self._engines.add(engine)

    def step(self, tokens: int, gaps: list[float]) -> None:
        """One decode step made ``tokens`` tokens, ``gaps`` seconds after each sequence's previous one."""
        now = time.monotonic()
        with self._lock:
            self._tokens += tokens
            self._itl.extend(gaps)
            self._recent.append((now, tokens))
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()

    def first_token(self, seconds: float) -> None:
        """A sequence got its first token ``seconds`` after it reached the engine."""
        with self._lock:
            self._tokens += 1
            self._ttft.append(seconds)

    def tokens_per_s(self) -> float:
        """Generated tokens per second over the last ``RATE_WINDOW_S`` seconds."""
        now = time.monotonic()
        with self._lock:
            recent = [(t, n) for t, n in self._recent if t >= now - RATE_WINDOW_S]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1.0)
        return sum(n for _, n in recent) / span

    def publish(self, pipe: Any, node: str) -> None:
        """Queue the gauges, the token count and the latencies noted since the last call on ``pipe``."""
        with self._lock:
            ttft, itl, tokens = self._ttft, self._itl, self._tokens
            self._ttft, self._itl, self._tokens = [], [], 0
            engines = list(self._engines)
        running = waiting = used = total = 0
        for engine in engines:
            r, w, u, t = engine.gauges()
            running, waiting, used, total = running + r, waiting + w, used + u, total + t
        key = keys.worker_stats(node)
        pipe.hset(key, mapping={"gen_running": running, "gen_waiting": waiting, "kv_blocks_used": used,
                                "kv_blocks_free": max(total - used, 0),
                                "gen_tokens_per_s": round(self.tokens_per_s(), 3)})
        if tokens:
            pipe.hincrby(key, "gen_tokens", tokens)
        ttft_histogram(node).observe_many(pipe, ttft, TTL_S)
        itl_histogram(node).observe_many(pipe, itl, TTL_S)

    def keep_fresh(self, busy: Any) -> None:
        """Publish every second while ``busy()`` (started once; the thread sleeps while nothing runs)."""
        with self._lock:
            if self._publisher is not None:
                return
            self._publisher = threading.Thread(target=self._publish_loop, args=(busy,), name="gpuq-gen-metrics",
                                               daemon=True)
            self._publisher.start()

    def _publish_loop(self, busy: Any) -> None:
        from gpuq.common.redis_client import get_redis
        from gpuq.worker.identity import node_name

        was_busy = False
        while True:
            time.sleep(1.0)
            now_busy = bool(busy())
            if not (now_busy or was_busy):
                continue
            was_busy = now_busy
            try:
                pipe = get_redis().pipeline(transaction=False)
                self.publish(pipe, node_name())
                pipe.expire(keys.worker_stats(node_name()), TTL_S)
                pipe.execute()
            except Exception as exc:  # noqa: BLE001 - telemetry must never stop generation
                log.warning("could not publish generation metrics: %s", exc)


def ttft_histogram(node: str) -> RedisHistogram:
    """Seconds from a sequence reaching the engine to its first token, on ``node``."""
    return RedisHistogram(keys.worker_histogram(node, "ttft"), TTFT_BUCKETS)


def itl_histogram(node: str) -> RedisHistogram:
    """Seconds between consecutive tokens of a sequence, on ``node``."""
    return RedisHistogram(keys.worker_histogram(node, "itl"), ITL_BUCKETS)


METRICS = GenerationMetrics()
