"""Inference speed of gpuq against baselines measured in the same run, on the packaged all-MiniLM-L6-v2.

The machine this runs on is shared, and its load drifts by a factor of several within minutes. Throughput is
therefore measured in interleaved rounds: each round runs the direct baseline, the bare-Celery baseline and
gpuq back to back (a few seconds each), a ratio is taken within each round, and the median round is reported.

Figures:
  direct    the model called in-process, batches of 64 (the ceiling), with torch's default intra-op threads
            and with one (the faster counts); plus one sentence per call
  bare      a bare Celery task with a resident model, the way people usually write it (prefork, one child,
            torch's default intra-op threads: faster here than one; ``BENCH_BARE_THREADS`` to change it)
  gpuq      gpuq over HTTP: one threads-pool worker with dynamic batching, ``--in-flight`` jobs outstanding, one
            sentence per job, each request ``Prefer: wait`` returning the final record; Celery task events
            off (GPUQ_TASK_EVENTS=false, the recommended inference-worker setting; set it to measure them on);
            GPUQ_BATCH_MAX_SIZE=64 (the direct baseline's batch), and two forward passes at once with one
            intra-op thread each (GPUQ_BATCH_EXECUTORS=2, GPUQ_TORCH_THREADS=1: cores / threads), unless set;
            concurrent submits are coalesced into group messages (GPUQ_SUBMIT_COALESCE_MS)
  bulk      the same jobs submitted ``--per-request`` at a time through ``POST /v1/jobs/batch`` (group messages,
            api/bulk.py), ``Prefer: wait`` returning the final records, ``--in-flight`` jobs outstanding
  latency   p50 of one job at a time over HTTP with batching (default window) and without (a second copy of
            the model with batch size 1 and no window, by GPUQ_BATCH_OVERRIDES), alternating job by job
  affinity  two models alternating over two workers: how many times a model was loaded for ``--jobs`` jobs
Prints every figure and ratio and writes bench/results/inference.json.

    python -m bench.inference [--jobs 400] [--in-flight 256] [--rounds 5] [--only gpuq,latency,affinity]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import direct, sentences  # noqa: E402
from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive  # noqa: E402
from gpuq.worker.devmodels import packaged_minilm_path  # noqa: E402

KEY = "bench-key-0123456789"
PHASES = ("gpuq", "latency", "affinity")


def body(model: str, text: str) -> dict[str, Any]:
    return {"kind": "inference", "model": model, "inputs": text, "params": {"task": "feature-extraction"}}


async def _run_jobs(url: str, bodies: list[dict[str, Any]], in_flight: int,
                    key: str = KEY) -> tuple[float, list[dict[str, Any]]]:
    """(jobs/s, final records) with ``in_flight`` requests outstanding, each waiting for its job to finish.

    aiohttp rather than httpx, and orjson to parse answers: the client shares the two cores with the system
    under test, and httpx spends several times more CPU per request (the standard json module about twice
    orjson's on answers full of embeddings). Each job carries an Idempotency-Key, so a request that loses its
    connection (a keep-alive connection closed by the server just as it was reused) is retried safely.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Prefer": "wait=60"}
    records: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        sem = asyncio.Semaphore(in_flight)

        async def one(b: dict[str, Any]) -> None:
            key = uuid.uuid4().hex
            async with sem:
                for attempt in range(5):
                    try:
                        async with session.post("/v1/jobs", json=b, headers={"Idempotency-Key": key}) as resp:
                            job = await resp.json(loads=orjson.loads)
                        while job["status"] not in ("succeeded", "failed", "cancelled"):  # the wait ran out
                            async with session.get(f"/v1/jobs/{job['id']}") as resp:
                                job = await resp.json(loads=orjson.loads)
                        break
                    except aiohttp.ClientConnectionError:
                        if attempt == 4:
                            raise
                assert job["status"] == "succeeded", job
                records.append(job)

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - start), records


def run_jobs(url: str, bodies: list[dict[str, Any]], in_flight: int,
             key: str = KEY) -> tuple[float, list[dict[str, Any]]]:
    return asyncio.run(_run_jobs(url, bodies, in_flight, key))


async def _run_bulk(url: str, bodies: list[dict[str, Any]], in_flight: int,
                    per_request: int, key: str = KEY) -> tuple[float, list[dict[str, Any]]]:
    """(jobs/s, final records) submitting ``per_request`` jobs per ``POST /v1/jobs/batch`` with ``Prefer: wait``,
    with ``in_flight`` jobs outstanding in all (``in_flight // per_request`` requests at a time)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Prefer": "wait=60"}
    records: list[dict[str, Any]] = []
    chunks = [bodies[i:i + per_request] for i in range(0, len(bodies), per_request)]
    async with aiohttp.ClientSession(url, headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as session:
        sem = asyncio.Semaphore(max(1, in_flight // per_request))

        async def one(chunk: list[dict[str, Any]]) -> None:
            key = uuid.uuid4().hex
            async with sem:
                for attempt in range(5):
                    try:
                        async with session.post("/v1/jobs/batch", json={"jobs": chunk},
                                                headers={"Idempotency-Key": key}) as resp:
                            jobs = (await resp.json(loads=orjson.loads))["jobs"]
                        break
                    except aiohttp.ClientConnectionError:
                        if attempt == 4:
                            raise
                for job in jobs:
                    while job["status"] not in ("succeeded", "failed", "cancelled"):  # the wait ran out
                        async with session.get(f"/v1/jobs/{job['id']}") as resp:
                            job = await resp.json(loads=orjson.loads)
                    assert job["status"] == "succeeded", job
                    records.append(job)

        start = time.perf_counter()
        await asyncio.gather(*(one(c) for c in chunks))
        return len(bodies) / (time.perf_counter() - start), records


def run_bulk(url: str, bodies: list[dict[str, Any]], in_flight: int,
             per_request: int, key: str = KEY) -> tuple[float, list[dict[str, Any]]]:
    return asyncio.run(_run_bulk(url, bodies, in_flight, per_request, key))


class BareCelery:
    """The baseline: bench/bare_celery.py's worker (prefork, one child) and its client."""

    def __init__(self, env: dict[str, str], log_dir: Path, warm_model: bool = True) -> None:
        if os.environ.get("BENCH_BARE_THREADS"):
            env = {**env, "OMP_NUM_THREADS": os.environ["BENCH_BARE_THREADS"]}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.bare_celery", "worker", "-P", "prefork", "-c", "1",
             "--without-gossip", "--without-mingle", "-l", "WARNING"], env=env, cwd=ROOT,
            stdout=(log_dir / "bare.log").open("wb"), stderr=subprocess.STDOUT)
        os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_MODEL")})
        from bench.bare_celery import embed, noop

        self.embed, self.noop = embed, noop
        if warm_model:
            embed.delay("warm up").get(timeout=120)
        noop.delay().get(timeout=120)

    def rate(self, texts: list[str]) -> float:
        start = time.perf_counter()
        for result in [self.embed.delay(t) for t in texts]:
            result.get(timeout=300)
        return len(texts) / (time.perf_counter() - start)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Stack:
    """A Redis, an API and gpuq workers."""

    def __init__(self, env: dict[str, str], tmp: Path, redis_pid: int) -> None:
        self.env, self.tmp, self.redis_pid = env, tmp, redis_pid
        self.workers: list[Service] = []
        self.api, self.url = start_api(env, tmp)

    def worker(self, name: str, **extra_env: str) -> None:
        svc = start_worker({**self.env, **extra_env}, self.tmp, name, pool="threads")
        wait_for(lambda: worker_alive(self.env["GPUQ_REDIS_URL"], f"{name}@"), 120, f"worker {name}")
        self.workers.append(svc)

    def stop_workers(self) -> None:
        for svc in self.workers:
            svc.stop()
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        self.api.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_job(pids: dict[str, int], run: Any, jobs: int) -> tuple[Any, dict[str, float]]:
    """Run ``run()`` and return (its result, CPU ms per job of each process and of this client)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    mine = time.process_time()
    result = run()
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    used["client"] = time.process_time() - mine
    return result, {name: round(1000 * s / jobs, 2) for name, s in used.items()}


def direct_best(texts: list[str]) -> tuple[float, int]:
    """(jobs/s, intra-op threads) of the faster of one thread and torch's default, batches of 64."""
    import torch

    default = torch.get_num_threads()
    best = (0.0, 1)
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        best = max(best, (direct(texts, 64), threads))
    torch.set_num_threads(default)
    return best


def direct_sequential(texts: list[str]) -> float:
    """Jobs/s of one sentence per call, with the faster intra-op thread setting."""
    import torch

    default = torch.get_num_threads()
    rates = []
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        rates.append(direct(texts, 1))
    torch.set_num_threads(default)
    return max(rates)


def batch_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = [r["batch"]["inputs"] for r in records if r.get("batch")]
    groups = [r["batch"].get("group", 1) for r in records if r.get("batch")]
    return {"mean_batch": statistics.fmean(sizes) if sizes else 0, "max_batch": max(sizes, default=0),
            "jobs_batched": sum(s > 1 for s in sizes),
            "mean_group": statistics.fmean(groups) if groups else 0}


def phase_throughput(stack: Stack, model: str, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds of direct / bare Celery / gpuq; then the cost of Celery task events."""
    bare = BareCelery(stack.env, stack.tmp)
    stack.worker("bench")
    bodies = [body(model, t) for t in texts]
    run_jobs(stack.url, bodies[:64], 64)  # load and warm the worker that holds the shared queue
    direct(texts[:64], 64)
    rounds: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    bulk_records: list[dict[str, Any]] = []
    try:
        for _ in range(args.rounds):
            row: dict[str, Any] = {}
            row["direct_batched"], row["direct_threads"] = direct_best(texts)
            row["bare_celery"] = bare.rate(texts[: max(len(texts) // 4, 50)])
            (row["gpuq_http"], records), cpu = cpu_per_job(
                {"worker": stack.workers[0].pid, "api": stack.api.pid, "redis": stack.redis_pid},
                lambda: run_jobs(stack.url, bodies, args.in_flight), len(bodies))
            row.update({f"cpu_ms_per_job_{name}": ms for name, ms in cpu.items()})
            (row["gpuq_bulk"], bulk_records), cpu = cpu_per_job(
                {"worker": stack.workers[0].pid, "api": stack.api.pid, "redis": stack.redis_pid},
                lambda: run_bulk(stack.url, bodies, args.in_flight, args.per_request), len(bodies))
            row.update({f"bulk_cpu_ms_per_job_{name}": ms for name, ms in cpu.items()})
            row["ratio_gpuq_vs_direct_batched"] = row["gpuq_http"] / row["direct_batched"]
            row["ratio_gpuq_vs_bare_celery"] = row["gpuq_http"] / row["bare_celery"]
            row["ratio_bulk_vs_direct_batched"] = row["gpuq_bulk"] / row["direct_batched"]
            row["ratio_bulk_vs_bare_celery"] = row["gpuq_bulk"] / row["bare_celery"]
            rounds.append(row)
            print(f"  round {len(rounds)}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    finally:
        bare.stop()
    out = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    out["direct_sequential"] = direct_sequential(texts[:100])
    noop = [{"kind": "synthetic", "model": "noop", "params": {"steps": 0}}] * len(texts)
    (out["gpuq_noop_jobs_per_s"], _), cpu = cpu_per_job(
        {"worker": stack.workers[0].pid, "api": stack.api.pid, "redis": stack.redis_pid},
        lambda: run_jobs(stack.url, noop, args.in_flight), len(noop))
    out.update({f"noop_cpu_ms_per_job_{name}": ms for name, ms in cpu.items()})
    out["rounds"] = rounds
    out.update(batch_summary(records))
    out.update({f"bulk_{k}": v for k, v in batch_summary(bulk_records).items()})
    return out


def p50_pair(url: str, batched: str, unbatched: str, n: int) -> tuple[float, float]:
    """Median ms from submit to final record, one job at a time, alternating the two models (so both medians
    see the same machine load): ``batched`` runs under the default window, ``unbatched`` has batch size 1."""
    trips: dict[str, list[float]] = {batched: [], unbatched: []}
    headers = {"Authorization": f"Bearer {KEY}", "Prefer": "wait=60"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for i, text in enumerate(sentences(2 * n)):
            model = batched if i % 2 else unbatched
            t0 = time.perf_counter()
            job = client.post("/v1/jobs", json=body(model, text)).json()
            assert job["status"] == "succeeded", job
            trips[model].append((time.perf_counter() - t0) * 1000)
    return statistics.median(trips[batched][2:]), statistics.median(trips[unbatched][2:])


def phase_latency(stack: Stack, model: str, unbatched: str, n: int) -> dict[str, Any]:
    """One worker, two copies of the model: one with the default batching, one with batching off."""
    stack.stop_workers()
    off = json.dumps({unbatched: {"max_batch_size": 1, "max_wait_ms": 0}})
    stack.worker("latency", GPUQ_BATCH_OVERRIDES=off)
    p50_batched, p50_unbatched = p50_pair(stack.url, model, unbatched, n)
    return {"p50_ms_batched": p50_batched, "p50_ms_unbatched": p50_unbatched,
            "batch_max_wait_ms": float(stack.env.get("GPUQ_BATCH_MAX_WAIT_MS", 5.0))}


def routable(redis_url: str, prefixes: tuple[str, ...]) -> bool:
    """Whether every worker named has registered its private queues and is live: what the API routes by."""
    import redis

    from gpuq.common import keys

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    live = r.zrangebyscore(keys.worker_expiry(), time.time(), "+inf")
    registered = r.hkeys(keys.worker_queues())
    return all(any(n.startswith(p) for n in live) and any(n.startswith(p) for n in registered) for p in prefixes)


def phase_affinity(stack: Stack, models: list[str], jobs: int, in_flight: int) -> dict[str, Any]:
    """Two workers, two models, jobs alternating between the models: each model should load exactly once."""
    stack.stop_workers()
    stack.worker("aff-a")
    stack.worker("aff-b")
    wait_for(lambda: routable(stack.env["GPUQ_REDIS_URL"], ("aff-a@", "aff-b@")), 60, "both workers routable")
    time.sleep(1.0)  # past the API's routing-table refresh (GPUQ_AFFINITY_REFRESH_S)
    bodies = [body(models[i % 2], t) for i, t in enumerate(sentences(jobs))]
    rate, records = run_jobs(stack.url, bodies, in_flight)
    loads = sum(1 for r in records if (r["timings"].get("model_load_ms") or 0) > 0)
    placement = Counter((Path(r["model"]).parent.name + "/" + Path(r["model"]).name, r["worker"].split("@")[0])
                        for r in records)
    return {"affinity_jobs": jobs, "affinity_jobs_per_s": rate, "affinity_model_loads": loads,
            "affinity_placement": {f"{m} on {w}": n for (m, w), n in sorted(placement.items())}}


def bench_env(redis_url: str, tmp: Path, model: str, torch_threads: str = "1") -> dict[str, str]:
    """The services' environment: one Redis (db 1 for bare Celery), the model's root, CPU inference settings."""
    return {**os.environ, "GPUQ_REDIS_URL": redis_url, "GPUQ_API_KEYS": f"bench:{KEY}",
            "GPUQ_DATA_DIR": str(tmp), "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"),
            "GPUQ_MODEL_ROOTS": f"{model}:{tmp / 'models'}", "BENCH_REDIS_URL": redis_url.replace("/0", "/1"),
            "BENCH_MODEL": model, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "GPUQ_TORCH_THREADS": torch_threads,
            # The direct baseline runs batches of 64: give gpuq's batcher the same ceiling (default 32).
            "GPUQ_BATCH_MAX_SIZE": os.environ.get("GPUQ_BATCH_MAX_SIZE", "64"),
            # Two passes at once with one intra-op thread each: the CPU worker setting (cores / torch threads).
            "GPUQ_BATCH_EXECUTORS": os.environ.get("GPUQ_BATCH_EXECUTORS", "2"),
            "GPUQ_TASK_EVENTS": os.environ.get("GPUQ_TASK_EVENTS", "false")}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen phases and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--per-request", type=int, default=64, help="jobs per bulk submit (POST /v1/jobs/batch)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-jobs", type=int, default=60)
    parser.add_argument("--only", default=",".join(PHASES))
    parser.add_argument("--torch-threads", default="1", help="GPUQ_TORCH_THREADS for gpuq's workers")
    args = parser.parse_args(argv)
    phases = set(args.only.split(","))
    texts = sentences(args.jobs)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-"))
    model = str(packaged_minilm_path())
    second = tmp / "models" / "minilm-copy"  # the same weights under another reference: a second model
    shutil.copytree(model, second)
    redis = EmbeddedRedis(tmp / "redis").start()
    env = bench_env(redis.url, tmp, model, args.torch_threads)
    out: dict[str, Any] = {"jobs": args.jobs, "in_flight": args.in_flight, "per_request": args.per_request,
                           "cpus": os.cpu_count(),
                           "load_avg_at_start": os.getloadavg()[0]}
    stack = Stack(env, tmp, redis.proc.pid)
    try:
        if "gpuq" in phases:
            out.update(phase_throughput(stack, model, texts, args))
        if "latency" in phases:
            out.update(phase_latency(stack, model, str(second), args.latency_jobs))
        if "affinity" in phases:
            out.update(phase_affinity(stack, [model, str(second)], max(args.jobs // 2, 200), args.in_flight))
    finally:
        stack.stop()
        redis.stop()
    out["load_avg_at_end"] = os.getloadavg()[0]
    report(out)
    return 0


def report(out: dict[str, Any]) -> None:
    """Print every figure and ratio; write the JSON summary."""
    print(f"\nall-MiniLM-L6-v2, {out['jobs']} one-sentence jobs, {out['in_flight']} in flight, "
          f"{out['cpus']} CPUs, load average {out['load_avg_at_start']:.1f} -> {out['load_avg_at_end']:.1f}")
    if "gpuq_http" in out:
        print(f"  (median of {len(out['rounds'])} interleaved rounds)")
        for key in ("direct_sequential", "direct_batched", "bare_celery", "gpuq_http", "gpuq_bulk"):
            print(f"  {key:<30} {out[key]:8.1f} jobs/s")
        print(f"  gpuq / direct batched          {out['ratio_gpuq_vs_direct_batched']:8.2f}x   (target 0.8x; "
              "one job per request)")
        print(f"  gpuq / bare Celery             {out['ratio_gpuq_vs_bare_celery']:8.2f}x   (target 4x)")
        print(f"  gpuq bulk / direct batched     {out['ratio_bulk_vs_direct_batched']:8.2f}x   (target 0.8x; "
              f"{out['per_request']} jobs per POST /v1/jobs/batch)")
        print(f"  gpuq bulk / bare Celery        {out['ratio_bulk_vs_bare_celery']:8.2f}x   (target 4x)")
        for prefix, what in (("cpu_ms_per_job_", "embedding"), ("bulk_cpu_ms_per_job_", "bulk embedding"),
                             ("noop_cpu_ms_per_job_", "no-op")):
            cpu = {k.rsplit("_", 1)[1]: v for k, v in out.items() if k.startswith(prefix)}
            print(f"  CPU per {what} job: {', '.join(f'{k} {v:.2f} ms' for k, v in cpu.items())} "
                  f"(total {sum(cpu.values()):.2f} ms)")
        print(f"  gpuq no-op jobs (framework only)    {out['gpuq_noop_jobs_per_s']:8.1f} jobs/s")
        for prefix, how in (("", "one job per request"), ("bulk_", "bulk")):
            print(f"  batch size under load ({how}): mean {out[prefix + 'mean_batch']:.1f} inputs, max "
                  f"{out[prefix + 'max_batch']}; {out[prefix + 'jobs_batched']} of {out['jobs']} jobs shared a pass; "
                  f"a job's message carried {out[prefix + 'mean_group']:.1f} jobs on average")
    if "p50_ms_batched" in out:
        budget = out["p50_ms_unbatched"] + out["batch_max_wait_ms"]
        print(f"  p50 single job: batched {out['p50_ms_batched']:.1f} ms, "
              f"unbatched {out['p50_ms_unbatched']:.1f} ms "
              f"(target: batched <= unbatched + max_wait_ms = {budget:.1f} ms)")
    if "affinity_model_loads" in out:
        print(f"  two models over two workers, {out['affinity_jobs']} jobs: {out['affinity_model_loads']} model "
              f"loads (target 2), {out['affinity_jobs_per_s']:.1f} jobs/s; {out['affinity_placement']}")
    path = ROOT / "bench" / "results" / "inference.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
