"""Redis faults: kill -9 and restart from AOF, and a full Redis (maxmemory + noeviction)."""
from __future__ import annotations

import time

import httpx
import redis

from tests.faults.conftest import Stack, wait_job
from tests.support.processes import wait_for

QUICK = {"kind": "synthetic", "model": "none", "params": {"steps": 2, "step_ms": 20}}


def test_redis_killed_and_restarted_with_aof_loses_no_accepted_job(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_api()
    worker_pid = stack.workers["w1"].pid
    accepted: list[str] = []
    with stack.client() as c:
        for i in range(30):
            resp = c.post("/v1/jobs", json={**QUICK, "inputs": i})
            assert resp.status_code == 202
            accepted.append(resp.json()["id"])
        stack.kill_redis()
        down = [c.post("/v1/jobs", json=QUICK).status_code for _ in range(5)]
        reads = c.get(f"/v1/jobs/{accepted[0]}").status_code
        time.sleep(2)
        stack.start_redis()  # same port, same data dir: the AOF brings everything back
        for i in range(10):
            resp = c.post("/v1/jobs", json={**QUICK, "inputs": 100 + i})
            assert resp.status_code == 202, resp.text
            accepted.append(resp.json()["id"])
        final = [wait_job(c, job_id, timeout=180)["status"] for job_id in accepted]
    assert down == [503] * 5 and reads == 503
    assert final == ["succeeded"] * len(accepted)
    assert stack.workers["w1"].alive() and stack.workers["w1"].pid == worker_pid
    outcome.record("Redis kill -9, then restart from its AOF",
                   "every 202'd job completes; 503 while down; workers reconnect without restart",
                   f"{len(accepted)}/{len(accepted)} accepted jobs succeeded; submits while down: {down[0]}; "
                   "same worker process")


def test_full_redis_refuses_submits_with_503_and_writes_nothing(stack: Stack, outcome) -> None:
    url = stack.start_redis("--maxmemory", "8mb")
    stack.start_api()
    r = redis.Redis.from_url(url)
    with stack.client() as c:
        assert c.post("/v1/jobs", json=QUICK).status_code == 202
        before = set(r.keys("*"))
        filler = 0
        # Big values first, then small ones: a refused 64 KiB SET frees its own query buffer, which drops
        # memory back under the limit, so fill until even a tiny write is refused.
        for size in (65536, 1024, 64):
            try:
                while True:
                    r.set(f"filler:{filler}", b"x" * size)
                    filler += 1
            except redis.exceptions.OutOfMemoryError:
                pass
        before = set(r.keys("*"))
        resp = c.post("/v1/jobs", json=QUICK, headers={"Idempotency-Key": "full-redis"})
        after = set(r.keys("*"))
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["retryable"] is True
    assert after == before  # nothing half-written: no record, no idempotency key, no stream
    outcome.record("Redis at maxmemory with noeviction", "submit fails loudly with 503, nothing half-written",
                   f"503 {resp.json()['error']['type']}; key set unchanged ({len(after)} keys)")


def test_api_reports_not_ready_while_redis_is_down(stack: Stack) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_api()
    with httpx.Client(base_url=stack.url) as anon:
        wait_for(lambda: anon.get("/readyz").status_code == 200, 30, "ready")
        stack.kill_redis()
        assert anon.get("/readyz").status_code == 503
        assert anon.get("/healthz").status_code == 200


def _sse(client: httpx.Client, path: str, **headers: str) -> tuple[int, list[str]]:
    """(status, event types) of one SSE request read to its end."""
    with client.stream("GET", path, headers=headers, timeout=30) as resp:
        kinds = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
        return resp.status_code, kinds


def test_first_event_replay_after_redis_returns_is_complete(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_api()
    with stack.client() as c:
        job = wait_job(c, c.post("/v1/jobs", json=QUICK).json()["id"])
        paths = [f"/v1/jobs/{job['id']}/events", f"/v1/jobs/{job['id']}/events?follow=false"]
        before = [_sse(c, p) for p in paths]  # pooled connections now exist in the API
        stack.kill_redis()
        time.sleep(1)
        stack.start_redis()
        after = [_sse(c, p) for p in paths]
    assert before[0][1][-1] == "completed" and after == before, (before, after)
    outcome.record("Redis restarted between two event replays of a finished job",
                   "the first replay after it returns is complete (stale pooled connections retried)",
                   f"statuses {[s for s, _ in after]}, {len(after[0][1])} events each, ending in {after[0][1][-1]}")
