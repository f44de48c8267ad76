"""Load and races: 10,000 jobs over HTTP with two workers; 50 concurrent submits sharing an idempotency key."""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
import pytest

from tests.conftest import KEY_A
from tests.faults.conftest import Stack

LOAD_JOBS = int(os.environ.get("GPUQ_LOAD_JOBS", "10000"))


async def _submit_all(url: str, count: int, concurrency: int) -> tuple[list[str], float]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=120,
                                 limits=limits) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str:
            async with sem:
                why = ""
                for _ in range(5):
                    try:
                        resp = await client.post("/v1/jobs", json={"kind": "synthetic", "model": "load",
                                                                   "inputs": i},
                                                 headers={"Idempotency-Key": f"load-{i}"})
                    except httpx.TransportError as exc:
                        # A keep-alive connection the server closed just as it was reused: retrying with the
                        # same Idempotency-Key is what a client does, and must not make a second job.
                        why = repr(exc)
                        await asyncio.sleep(0.2)
                        continue
                    if resp.status_code in (200, 202):
                        return str(resp.json()["id"])
                    why = f"{resp.status_code} {resp.text}"
                    await asyncio.sleep(0.2)
                raise AssertionError(f"submit {i} failed: {why}")

        start = time.perf_counter()
        ids = await asyncio.gather(*(one(i) for i in range(count)))
        return list(ids), time.perf_counter() - start


def _statuses(stack: Stack, ids: list[str]) -> dict[str, str]:
    pipe = stack.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"gpuq:job:{job_id}", "status")
    return dict(zip(ids, pipe.execute()))


@pytest.mark.timeout(1500)
def test_ten_thousand_jobs_all_succeed_none_lost_none_duplicated(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.start_api()
    t0 = time.perf_counter()
    ids, submit_s = asyncio.run(_submit_all(stack.url, LOAD_JOBS, 64))
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        statuses = _statuses(stack, ids)
        if all(s in ("succeeded", "failed", "cancelled") for s in statuses.values()):
            break
        time.sleep(1)
    total_s = time.perf_counter() - t0
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    completed = sum(1 for job_id in ids if _completed_events(stack, job_id) == 1)
    assert len(set(ids)) == LOAD_JOBS
    assert counts == {"succeeded": LOAD_JOBS}, counts
    assert completed == LOAD_JOBS
    workers = {w for w in _workers(stack, ids)}
    assert len(workers) == 2
    summary = (f"{LOAD_JOBS} succeeded, 0 lost, 0 duplicated; submit {LOAD_JOBS / submit_s:.0f} jobs/s, "
               f"completion {LOAD_JOBS / total_s:.0f} jobs/s")
    print(summary)
    outcome.record(f"{LOAD_JOBS} small jobs submitted concurrently over HTTP, 2 workers",
                   "all succeed, none lost or duplicated", summary)


def _completed_events(stack: Stack, job_id: str) -> int:
    return sum(1 for _, f in stack.r.xrange(f"gpuq:events:{job_id}") if f["type"] == "completed")


def _workers(stack: Stack, ids: list[str]) -> list[str]:
    pipe = stack.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"gpuq:job:{job_id}", "worker")
    return [w.split("@")[0] for w in pipe.execute()]


async def _race(url: str, n: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=n)) as client:
        body = {"kind": "synthetic", "model": "race", "params": {"steps": 1}}
        resps = await asyncio.gather(*(client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "race-key"})
                                       for _ in range(n)))
        return [{"status": r.status_code, "id": r.json()["id"]} for r in resps]


def test_fifty_concurrent_submits_with_one_idempotency_key_make_one_job(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_api()
    results = asyncio.run(_race(stack.url, 50))
    ids = {r["id"] for r in results}
    codes = sorted(r["status"] for r in results)
    assert len(ids) == 1
    assert codes.count(202) == 1 and codes.count(200) == 49
    assert stack.r.zcard("gpuq:tenant:alpha:jobs") == 1
    assert stack.r.llen("inference") + sum(stack.r.llen(f"inference:{p}") for p in (3, 6)) == 1
    outcome.record("50 concurrent submits with the same Idempotency-Key", "exactly one job",
                   "1 job, 1 queued message; one 202 and 49 replays (200)")
