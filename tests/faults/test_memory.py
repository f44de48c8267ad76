"""Out of memory inside jobs: the job fails clearly, the worker frees memory and keeps serving."""
from __future__ import annotations

import asyncio

import httpx

from tests.conftest import KEY_A
from tests.faults.conftest import Stack, wait_job


async def _run_many(url: str, body: dict, count: int) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=120) as c:
        ids = [(await c.post("/v1/jobs", json=body)).json()["id"] for _ in range(count)]
        out = []
        for job_id in ids:
            while True:
                job = (await c.get(f"/v1/jobs/{job_id}")).json()
                if job["status"] in ("succeeded", "failed"):
                    out.append(job)
                    break
                await asyncio.sleep(0.05)
        return out


def test_oom_in_200_jobs_fails_each_and_memory_does_not_grow(stack: Stack, outcome) -> None:
    stack.start_redis()
    stack.start_worker("w1")
    stack.start_api()
    probe = {"kind": "synthetic", "model": "none", "params": {"report_memory": True}}
    oom = {"kind": "synthetic", "model": "none", "params": {"alloc_mb": 64, "fail": "oom"}}
    with stack.client() as c:
        idle = wait_job(c, c.post("/v1/jobs", json=probe).json()["id"])["result"]["rss_bytes"]
    asyncio.run(_run_many(stack.url, oom, 10))  # reach the allocator's high-water mark first
    with stack.client() as c:
        before = wait_job(c, c.post("/v1/jobs", json=probe).json()["id"])["result"]["rss_bytes"]
    failed = asyncio.run(_run_many(stack.url, oom, 200))
    with stack.client() as c:
        after_job = wait_job(c, c.post("/v1/jobs", json=probe).json()["id"])
    after = after_job["result"]["rss_bytes"]
    assert [j["status"] for j in failed] == ["failed"] * 200
    assert {j["error"]["type"] for j in failed} == {"resource_exhausted"}
    assert after_job["status"] == "succeeded"
    growth_mb = (after - before) / 2**20
    assert growth_mb < 16, f"worker RSS grew {growth_mb:.1f} MiB over 200 OOM jobs"
    outcome.record("allocation failure (64 MiB then MemoryError) in 200 jobs",
                   "each fails resource_exhausted, worker serves the next, memory flat",
                   f"200 failed cleanly; RSS idle {idle / 2**20:.0f} MiB, after 10 such jobs "
                   f"{before / 2**20:.0f} MiB, after 200 more {after / 2**20:.0f} MiB")
