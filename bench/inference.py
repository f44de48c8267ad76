"""Inference speed of gpuq against baselines measured in the same run, on the packaged all-MiniLM-L6-v2.

Phases (``--only`` picks some):
  direct    the model called in-process: one sentence per call, and batches of 64 (the ceiling)
  bare      a bare Celery task with a resident model, the way people usually write it (prefork, one child)
  gpuq      gpuq over HTTP, a threads worker with dynamic batching, ``--in-flight`` jobs outstanding, one
            sentence per job (each request uses ``Prefer: wait`` and returns the final record)
  latency   p50 of one job at a time over HTTP, with batching (default window) and without (batch size 1)
  affinity  two models alternating over two workers: how many times a model was loaded for ``--jobs`` jobs
Prints every figure and ratio and writes bench/results/inference.json.

    python -m bench.inference [--jobs 400] [--in-flight 256] [--only gpuq,latency]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import bare_celery, direct, sentences  # noqa: E402
from common.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive  # noqa: E402
from worker.devmodels import packaged_minilm_path  # noqa: E402

KEY = "bench-key-0123456789"
PHASES = ("direct", "bare", "gpuq", "latency", "affinity")


def body(model: str, text: str) -> dict[str, Any]:
    return {"kind": "inference", "model": model, "inputs": text, "params": {"task": "feature-extraction"}}


async def _run_jobs(url: str, bodies: list[dict[str, Any]],
                    in_flight: int) -> tuple[float, list[dict[str, Any]]]:
    """(jobs/s, final records) with ``in_flight`` requests outstanding, each waiting for its job to finish."""
    headers = {"Authorization": f"Bearer {KEY}", "Prefer": "wait=120"}
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    records: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as client:
        sem = asyncio.Semaphore(in_flight)

        async def one(b: dict[str, Any]) -> None:
            async with sem:
                job = (await client.post("/v1/jobs", json=b)).json()
                while job["status"] not in ("succeeded", "failed", "cancelled"):  # only if wait ran out
                    await asyncio.sleep(0.05)
                    job = (await client.get(f"/v1/jobs/{job['id']}")).json()
                assert job["status"] == "succeeded", job
                records.append(job)

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - start), records


def run_jobs(url: str, bodies: list[dict[str, Any]], in_flight: int) -> tuple[float, list[dict[str, Any]]]:
    return asyncio.run(_run_jobs(url, bodies, in_flight))


def p50_single(url: str, model: str, n: int) -> float:
    """Median ms from submit to final record, one job at a time."""
    trips = []
    headers = {"Authorization": f"Bearer {KEY}", "Prefer": "wait=60"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for text in sentences(n):
            t0 = time.perf_counter()
            job = client.post("/v1/jobs", json=body(model, text)).json()
            assert job["status"] == "succeeded", job
            trips.append((time.perf_counter() - t0) * 1000)
    return statistics.median(trips)


class Stack:
    """A Redis, an API and gpuq workers for one phase."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.workers: list[Service] = []
        self.api: Service | None = None
        self.url = ""

    def worker(self, name: str, **extra_env: str) -> None:
        svc = start_worker({**self.env, **extra_env}, self.tmp, name, pool="threads")
        wait_for(lambda: worker_alive(self.env["GPUQ_REDIS_URL"], f"{name}@"), 120, f"worker {name}")
        self.workers.append(svc)

    def start_api(self) -> str:
        self.api, self.url = start_api(self.env, self.tmp)
        return self.url

    def stop_workers(self) -> None:
        for svc in self.workers:
            svc.stop()
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        if self.api:
            self.api.stop()


def batch_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = [r["batch"]["inputs"] for r in records if r.get("batch")]
    return {"mean_batch": statistics.fmean(sizes) if sizes else 0, "max_batch": max(sizes, default=0),
            "jobs_batched": sum(s > 1 for s in sizes)}


def phase_gpuq(stack: Stack, model: str, texts: list[str], in_flight: int) -> dict[str, Any]:
    stack.worker("bench")
    url = stack.start_api()
    run_jobs(url, [body(model, t) for t in texts[:32]], 32)  # load and warm
    rate, records = run_jobs(url, [body(model, t) for t in texts], in_flight)
    return {"gpuq_http": rate, **batch_summary(records)}


def phase_latency(stack: Stack, model: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unbatched = {"GPUQ_BATCH_MAX_SIZE": "1", "GPUQ_BATCH_MAX_WAIT_MS": "0"}
    for label, extra in (("batched", {}), ("unbatched", unbatched)):
        stack.stop_workers()
        stack.worker(f"lat-{label}", **extra)
        url = stack.url or stack.start_api()
        p50_single(url, model, 5)  # load and warm
        out[f"p50_ms_{label}"] = p50_single(url, model, n)
    return out


def phase_affinity(stack: Stack, models: list[str], jobs: int, in_flight: int) -> dict[str, Any]:
    stack.stop_workers()
    stack.worker("aff-a")
    stack.worker("aff-b")
    url = stack.url or stack.start_api()
    time.sleep(1.0)  # the API's routing table sees both workers
    bodies = [body(models[i % 2], t) for i, t in enumerate(sentences(jobs))]
    rate, records = run_jobs(url, bodies, in_flight)
    loads = sum(1 for r in records if (r["timings"].get("model_load_ms") or 0) > 0)
    placement = Counter((r["model"][-8:], r["worker"].split("@")[0]) for r in records)
    return {"affinity_jobs_per_s": rate, "affinity_model_loads": loads,
            "affinity_placement": {f"{m} on {w}": n for (m, w), n in sorted(placement.items())}}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen phases and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--latency-jobs", type=int, default=60)
    parser.add_argument("--only", default=",".join(PHASES))
    args = parser.parse_args(argv)
    phases = set(args.only.split(","))
    texts = sentences(args.jobs)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-"))
    model = str(packaged_minilm_path())
    second = tmp / "models" / "minilm-copy"  # the same weights under another reference: a second model
    shutil.copytree(model, second)
    redis = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": redis.url, "GPUQ_API_KEYS": f"bench:{KEY}",
           "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_MODEL_ROOTS": f"{model}:{tmp / 'models'}",
           "BENCH_REDIS_URL": redis.url.replace("/0", "/1"), "BENCH_MODEL": model,
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out: dict[str, Any] = {"jobs": args.jobs, "in_flight": args.in_flight, "cpus": os.cpu_count()}
    stack = Stack(env, tmp)
    try:
        if "direct" in phases:
            out["direct_sequential"] = direct(texts, 1)
            out["direct_batched"] = direct(texts, 64)
        if "bare" in phases:
            out["bare_celery"], out["bare_celery_noop_ms"] = bare_celery(env, tmp, texts)
        if "gpuq" in phases:
            out.update(phase_gpuq(stack, model, texts, args.in_flight))
        if "latency" in phases:
            out.update(phase_latency(stack, model, args.latency_jobs))
            out["batch_max_wait_ms"] = 5.0
        if "affinity" in phases:
            out.update(phase_affinity(stack, [model, str(second)], max(args.jobs // 2, 200), args.in_flight))
    finally:
        stack.stop()
        redis.stop()
    report(out)
    return 0


def _ratio(out: dict[str, Any], a: str, b: str) -> float | None:
    return out[a] / out[b] if out.get(a) and out.get(b) else None


def report(out: dict[str, Any]) -> None:
    """Print every figure and ratio; write the JSON summary."""
    out["ratio_gpuq_vs_direct_batched"] = _ratio(out, "gpuq_http", "direct_batched")
    out["ratio_gpuq_vs_bare_celery"] = _ratio(out, "gpuq_http", "bare_celery")
    print(f"\nall-MiniLM-L6-v2, {out['jobs']} one-sentence jobs, {out['in_flight']} in flight, "
          f"{out['cpus']} CPUs")
    for key in ("direct_sequential", "direct_batched", "bare_celery", "gpuq_http", "affinity_jobs_per_s"):
        if key in out:
            print(f"  {key:<28} {out[key]:8.1f} jobs/s")
    for key in ("ratio_gpuq_vs_direct_batched", "ratio_gpuq_vs_bare_celery"):
        if out.get(key) is not None:
            print(f"  {key:<28} {out[key]:8.2f}x   (target {'0.8' if 'direct' in key else '4'}x)")
    if "mean_batch" in out:
        print(f"  batch size under load: mean {out['mean_batch']:.1f}, max {out['max_batch']}, "
              f"{out['jobs_batched']} of {out['jobs']} jobs shared a forward pass")
    if "p50_ms_batched" in out:
        budget = out["p50_ms_unbatched"] + out["batch_max_wait_ms"]
        print(f"  p50 single job: batched {out['p50_ms_batched']:.1f} ms, "
              f"unbatched {out['p50_ms_unbatched']:.1f} ms "
              f"(target: batched <= unbatched + max_wait_ms = {budget:.1f} ms)")
    if "affinity_model_loads" in out:
        print(f"  two models over two workers: {out['affinity_model_loads']} model loads (target 2); "
              f"placement {out['affinity_placement']}")
    path = ROOT / "bench" / "results" / "inference.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
