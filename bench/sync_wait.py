"""Waiting for a job: client polling vs ``Prefer: wait`` vs ``?wait`` long-poll, and webhook delivery delay.

For the same short job (3 steps of 100 ms) it measures, in one session: how long after the job finished the
client learns it, how many HTTP requests that took, and how many Redis commands the whole system ran per job
(job-record reads: polling costs the API one per request). Baseline: polling every 50 ms. Also the delay from a job's
finish to its signed webhook reaching a receiver on loopback. Writes bench/results/sync_wait.json.

    python -m bench.sync_wait [--jobs 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive  # noqa: E402
from tests.support.webhook_receiver import Receiver  # noqa: E402

KEY = "bench-key-0123456789"
JOB = {"kind": "synthetic", "model": "bench", "params": {"steps": 3, "step_ms": 100}}


def _record_reads(r: redis.Redis) -> int:
    """Job-record reads so far (HGETALL: what the API does per GET of a job)."""
    return int(r.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


def _learned_ms(job: dict[str, Any], seen_at: float) -> float:
    return (seen_at - job["timings"]["finished_at"]) * 1000


def poll(c: httpx.Client) -> tuple[float, int]:
    job, requests = c.post("/v1/jobs", json=JOB).json(), 1
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.05)
        job, requests = c.get(f"/v1/jobs/{job['id']}").json(), requests + 1
    return _learned_ms(job, time.time()), requests


def prefer_wait(c: httpx.Client) -> tuple[float, int]:
    job = c.post("/v1/jobs", json=JOB, headers={"Prefer": "wait=30"}).json()
    return _learned_ms(job, time.time()), 1


def long_poll(c: httpx.Client) -> tuple[float, int]:
    job = c.post("/v1/jobs", json=JOB).json()
    job = c.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
    return _learned_ms(job, time.time()), 2


def measure(c: httpx.Client, r: redis.Redis, how: Any, n: int) -> dict[str, float]:
    how(c)  # warm up
    before, lat, reqs = _record_reads(r), [], []
    for _ in range(n):
        ms, count = how(c)
        lat.append(ms)
        reqs.append(count)
    return {"median_learned_ms": statistics.median(lat), "requests_per_job": statistics.mean(reqs),
            "record_reads_per_job": (_record_reads(r) - before) / n}


def webhook_delay(c: httpx.Client, n: int) -> float:
    receiver = Receiver().start()
    try:
        ids = []
        for _ in range(n):
            body = {**JOB, "webhook": {"url": receiver.url(), "events": ["completed"]}}
            ids.append(c.post("/v1/jobs", json=body, headers={"Prefer": "wait=30"}).json()["id"])
        got = receiver.wait_for(lambda d: len(d) >= n, timeout=120)
        finished = {i: c.get(f"/v1/jobs/{i}").json()["timings"]["finished_at"] for i in ids}
        return statistics.median((d.at - finished[d.body["job_id"]]) * 1000 for d in got)
    finally:
        receiver.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-"))
    server = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": server.url, "GPUQ_API_KEYS": f"bench:{KEY}", "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_WEBHOOK_SECRETS": "bench:bench-secret-0123456789",
           "GPUQ_WEBHOOK_ALLOWLIST": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    out: dict[str, Any] = {"jobs": args.jobs, "job": JOB["params"]}
    worker = start_worker(env, tmp, "bench")
    sender: Service | None = None
    api, url = start_api(env, tmp)
    try:
        wait_for(lambda: worker_alive(server.url, "bench@"), 90, "worker")
        r = redis.Redis.from_url(server.url, decode_responses=True)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            for name, how in (("poll_50ms", poll), ("prefer_wait", prefer_wait), ("long_poll", long_poll)):
                out[name] = measure(c, r, how, args.jobs)
            sender = Service("webhooks", env, tmp, "webhooks")  # only now: it reads Redis too
            out["webhook_delivery_ms"] = webhook_delay(c, args.jobs)
    finally:
        api.stop()
        if sender is not None:
            sender.stop()
        worker.stop()
        server.stop()
    report(out)
    return 0


def report(out: dict[str, Any]) -> None:
    base = out["poll_50ms"]
    print(f"\n{out['jobs']} synthetic jobs of 3 x 100 ms; baseline: the client polls every 50 ms")
    print(f"  {'':<12} {'learns (ms)':>12} {'HTTP req/job':>13} {'record reads/job':>17} {'vs poll':>8}")
    for name in ("poll_50ms", "prefer_wait", "long_poll"):
        m = out[name]
        m["record_reads_vs_poll"] = m["record_reads_per_job"] / base["record_reads_per_job"]
        print(f"  {name:<12} {m['median_learned_ms']:12.1f} {m['requests_per_job']:13.1f} "
              f"{m['record_reads_per_job']:17.1f} {m['record_reads_vs_poll']:7.2f}x")
    print(f"  webhook: signed delivery reaches a loopback receiver {out['webhook_delivery_ms']:.1f} ms after the "
          "job finished (median)")
    path = ROOT / "bench" / "results" / "sync_wait.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
