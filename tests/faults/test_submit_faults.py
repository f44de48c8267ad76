"""Bursts of concurrent submits, which share one submit script call per event-loop tick, against a Redis that is
down or full: every submit gets a 503 and nothing of any of them is stored, record or message."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from tests.faults.conftest import Stack

QUICK = {"kind": "synthetic", "model": "burst", "params": {"steps": 0}}


def _burst(stack: Stack, keys: list[str]) -> list[httpx.Response]:
    with stack.client() as c, ThreadPoolExecutor(len(keys)) as pool:
        return list(pool.map(lambda k: c.post("/v1/jobs", json={**QUICK, "inputs": k},
                                              headers={"Idempotency-Key": k}), keys))


def test_a_burst_while_redis_is_down_gets_503_and_stores_nothing(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_api()
    with stack.client() as c:
        assert c.post("/v1/jobs", json=QUICK).status_code == 202
    before = set(stack.r.keys("*"))
    stack.kill_redis()
    keys = [f"down-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    down = _burst(stack, keys)
    stack.start_redis()  # same port and data: the AOF brings back exactly what was acknowledged
    after = set(stack.r.keys("*"))
    retried = _burst(stack, keys)
    assert [a.status_code for a in down] == [503] * 20
    assert all(a.json()["error"]["retryable"] for a in down)
    assert after == before
    assert sorted(a.status_code for a in retried) == [202] * 20  # the keys were never used: all fresh
    outcome.record("20 concurrent submits while Redis is down", "all 503, nothing stored; a retry creates each once",
                   f"{len(down)} x 503; key set unchanged ({len(after)} keys); retry: 20 x 202")


def test_a_burst_into_a_full_redis_gets_503_and_writes_nothing(stack: Stack, outcome) -> None:
    url = stack.start_redis()
    stack.start_api()
    r = redis.Redis.from_url(url)
    with stack.client() as c:
        assert c.post("/v1/jobs", json=QUICK).status_code == 202
    r.config_set("maxmemory", 1)  # full: with noeviction every write is refused from here on
    before = set(r.keys("*"))
    answers = _burst(stack, [f"full-{i}" for i in range(20)])
    after = set(r.keys("*"))
    assert [a.status_code for a in answers] == [503] * 20, [a.text for a in answers][:2]
    assert after == before
    outcome.record("20 concurrent submits into Redis at maxmemory (noeviction)",
                   "all 503, nothing half-written by the shared script call",
                   f"20 x 503; key set unchanged ({len(after)} keys)")
