"""Throughput of gpuq against baselines measured in the same session, on the packaged all-MiniLM-L6-v2.

Runs: direct sequential calls, a direct batched call, a bare Celery task with a resident model, and gpuq
over HTTP with many jobs in flight; plus the round trip of a no-op job through gpuq vs bare Celery.
Prints jobs/s and ratios and writes bench/results/throughput.json.

    python -m bench.throughput [--jobs 200] [--in-flight 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive  # noqa: E402
from gpuq.worker.devmodels import packaged_minilm_path  # noqa: E402

KEY = "bench-key-0123456789"


def sentences(n: int) -> list[str]:
    """Short, distinct sentences (one per job)."""
    return [f"Benchmark sentence number {i} about resident models." for i in range(n)]


def direct(texts: list[str], batch: int) -> float:
    """Jobs/s of the model called in-process, ``batch`` sentences per forward pass."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(packaged_minilm_path())
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        ((hidden * mask).sum(1) / mask.sum(1)).tolist()
    return len(texts) / (time.perf_counter() - start)


def bare_celery(env: dict[str, str], log_dir: Path, texts: list[str]) -> tuple[float, float]:
    """(jobs/s with all tasks in flight, median no-op round trip ms) for plain Celery."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.bare_celery", "worker", "-P", "prefork",
                             "-c", "1", "--without-gossip", "--without-mingle", "-l", "WARNING"], env=env, cwd=ROOT,
                            stdout=(log_dir / "bare.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_MODEL")})
        from bench.bare_celery import embed, noop

        embed.delay("warm up").get(timeout=120)
        start = time.perf_counter()
        results = [embed.delay(t) for t in texts]
        for r in results:
            r.get(timeout=300)
        rate = len(texts) / (time.perf_counter() - start)
        trips = []
        for _ in range(30):
            t0 = time.perf_counter()
            noop.delay().get(timeout=30)
            trips.append((time.perf_counter() - t0) * 1000)
        return rate, statistics.median(trips)
    finally:
        proc.terminate()
        proc.wait(30)


async def _gpuq_run(url: str, bodies: list[dict[str, Any]], in_flight: int) -> float:
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as client:
        sem = asyncio.Semaphore(in_flight)

        async def one(body: dict[str, Any]) -> None:
            async with sem:
                # Prefer: wait holds the request until the job ends (no polling storm from 200 clients).
                job = (await client.post("/v1/jobs", json=body, headers={"Prefer": "wait=60"})).json()
                while job["status"] not in ("succeeded", "failed", "cancelled"):
                    job = (await client.get(f"/v1/jobs/{job['id']}", params={"wait": 30})).json()
                assert job["status"] == "succeeded", job

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - start)


def gpuq(url: str, texts: list[str], in_flight: int) -> tuple[float, float]:
    """(jobs/s over HTTP with ``in_flight`` jobs outstanding, median no-op round trip ms)."""
    model = str(packaged_minilm_path())
    embed = [{"kind": "inference", "model": model, "inputs": t, "params": {"task": "feature-extraction"}}
             for t in texts]
    asyncio.run(_gpuq_run(url, embed[:2], 2))  # warm the resident model
    rate = asyncio.run(_gpuq_run(url, embed, in_flight))
    trips = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for _ in range(30):
            t0 = time.perf_counter()
            job = client.post("/v1/jobs", json={"kind": "synthetic", "model": "noop", "params": {"steps": 0}}).json()
            while job["status"] != "succeeded":
                time.sleep(0.002)
                job = client.get(f"/v1/jobs/{job['id']}").json()
            trips.append((time.perf_counter() - t0) * 1000)
    return rate, statistics.median(trips)


def main(argv: list[str] | None = None) -> int:
    """Run every variant and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=200)
    args = parser.parse_args(argv)
    texts = sentences(args.jobs)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-"))
    redis = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": redis.url, "GPUQ_API_KEYS": f"bench:{KEY}", "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_MODEL_ROOTS": str(packaged_minilm_path()),
           "BENCH_REDIS_URL": redis.url.replace("/0", "/1"), "BENCH_MODEL": str(packaged_minilm_path()),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out: dict[str, Any] = {"jobs": args.jobs, "in_flight": args.in_flight}
    try:
        out["direct_sequential"] = direct(texts, 1)
        out["direct_batched"] = direct(texts, 64)
        out["bare_celery"], out["bare_celery_noop_ms"] = bare_celery(env, tmp, texts)
        worker: Service = start_worker(env, tmp, "bench")
        wait_for(lambda: worker_alive(redis.url, "bench@"), 90, "worker")
        api, url = start_api(env, tmp)
        try:
            out["gpuq_http"], out["gpuq_noop_ms"] = gpuq(url, texts, args.in_flight)
        finally:
            api.stop()
            worker.stop()
    finally:
        redis.stop()
    out["ratio_gpuq_vs_direct_batched"] = out["gpuq_http"] / out["direct_batched"]
    out["ratio_gpuq_vs_bare_celery"] = out["gpuq_http"] / out["bare_celery"]
    out["ratio_noop_gpuq_vs_bare_celery"] = out["gpuq_noop_ms"] / out["bare_celery_noop_ms"]
    report(out)
    return 0


def report(out: dict[str, Any]) -> None:
    """Print the table and write the JSON summary."""
    print(f"\nall-MiniLM-L6-v2, {out['jobs']} one-sentence jobs, {out['in_flight']} in flight")
    for key in ("direct_sequential", "direct_batched", "bare_celery", "gpuq_http"):
        print(f"  {key:<22} {out[key]:8.1f} jobs/s")
    print(f"  gpuq / direct batched  {out['ratio_gpuq_vs_direct_batched']:8.2f}x")
    print(f"  gpuq / bare Celery     {out['ratio_gpuq_vs_bare_celery']:8.2f}x")
    print(f"  no-op round trip: gpuq {out['gpuq_noop_ms']:.1f} ms, bare Celery {out['bare_celery_noop_ms']:.1f} ms "
          f"({out['ratio_noop_gpuq_vs_bare_celery']:.2f}x)")
    path = ROOT / "bench" / "results" / "throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
