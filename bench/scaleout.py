"""Scale-out: throughput of a fixed-cost job with 1, 2 and 4 worker processes, against the 1-worker run.

The job is the ``synthetic`` kind in ``busy`` mode: a busy loop of ``steps x step_ms`` of CPU per job,
like a kernel that holds its device, with a progress point per step. Each worker is a real
``gpuq worker`` (Celery parent + one prefork child) on a private Redis. Jobs are created and published
the way the API does it (record + Celery message) in one burst once every worker is up, and throughput
is read from the records: jobs / (last finish - first start).

Scaling efficiency is ``throughput(n) / (n x throughput(1))``. A busy-loop worker needs one core, so
with C cores only ``min(n, C)`` workers can run at once; the "per available core" column divides by
``min(n, C)`` instead, which is the target the 0.9 applies to. Redis and the Celery parents need some CPU
too, and other processes on a shared machine take theirs, so the load average is printed with each run,
with the cores the workers actually obtained (their CPU seconds / the run's wall time). "CPU efficiency"
is the worker CPU per job at 1 worker over that at n workers: the efficiency n workers would reach with a
free core each, which other processes' load cannot distort.

    python -m bench.scaleout [--workers 1,2,4] [--jobs-per-worker 30] [--steps 10] [--step-ms 10]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.processes import Service, start_worker, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _producer(redis_url: str) -> Any:
    from celery import Celery

    from gpuq.common.celery_config import celery_config
    from gpuq.common.settings import Settings

    app = Celery("scaleout-producer")
    app.conf.update(celery_config(Settings(redis_url=redis_url)))
    return app


def submit(redis_url: str, n: int, params: dict[str, Any]) -> list[str]:
    """Create and publish ``n`` synthetic jobs exactly as ``POST /v1/jobs`` does."""
    import redis

    from gpuq.common.dispatch import publish
    from gpuq.common.jobs.registry import get_spec
    from gpuq.common.records import JobStore

    jobs = JobStore(redis.Redis.from_url(redis_url, decode_responses=True))
    app, spec = _producer(redis_url), get_spec("synthetic")
    ids = []
    for _ in range(n):
        job_id = uuid.uuid4().hex
        jobs.create({"id": job_id, "tenant": "bench", "kind": "synthetic", "model": "busy",
                     "queue": spec.queue, "priority": "normal", "status": "queued", "inputs": None,
                     "params": params, "attempts": 0, "cancel_requested": 0,
                     "timings": {"submitted_at": time.time()}}, None, "")
        publish(app, job_id, spec, "normal")
        ids.append(job_id)
    return ids


def wait_done(redis_url: str, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Poll the records until every job is terminal; return them."""
    import redis

    from gpuq.common.records import JobStore

    jobs = JobStore(redis.Redis.from_url(redis_url, decode_responses=True))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [jobs.get_raw(i) or {} for i in ids]
        if all(r.get("status") in ("succeeded", "failed", "cancelled") for r in records):
            return records
        time.sleep(0.2)
    raise TimeoutError("jobs did not finish")


def cpu_seconds(workers: list[Service], redis_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the worker process trees (parents + pool children) and by Redis."""
    import psutil

    def tree(pid: int) -> float:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    return {"workers": sum(tree(w.pid) for w in workers), "redis": tree(redis_pid)}


def run_once(env: dict[str, str], redis_url: str, redis_pid: int, tmp: Path, n: int,
             args: argparse.Namespace) -> dict[str, Any]:
    """Start ``n`` workers, run ``n x jobs_per_worker`` jobs, stop them; return the measurements."""
    import redis

    tag = f"s{n}-{uuid.uuid4().hex[:6]}"
    workers: list[Service] = [start_worker(env, tmp, f"{tag}w{i}") for i in range(n)]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_for(lambda: sum(1 for m in r.zrange("gpuq:workers", 0, -1) if m.startswith(tag)) == n, 120,
                 f"{n} workers")
        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds(workers, redis_pid)
        params = {"steps": args.steps, "step_ms": args.step_ms, "mode": "busy"}
        ids = submit(redis_url, n * args.jobs_per_worker, params)
        records = wait_done(redis_url, ids, timeout=600)
        cpu_used = {k: v - cpu_before[k] for k, v in cpu_seconds(workers, redis_pid).items()}
    finally:
        for w in workers:
            w.stop(timeout=30)
    assert all(rec["status"] == "succeeded" for rec in records), "a benchmark job failed"
    starts = [rec["timings"]["started_at"] for rec in records]
    ends = [rec["timings"]["finished_at"] for rec in records]
    window = max(ends) - min(starts)
    per_node: dict[str, int] = {}
    for rec in records:
        node = str(rec["worker"]).split(":")[0]
        per_node[node] = per_node.get(node, 0) + 1
    return {"workers": n, "jobs": len(records), "window_s": round(window, 3),
            "jobs_per_s": len(records) / window, "jobs_per_s_per_worker": len(records) / window / n,
            "mean_run_ms": sum(rec["timings"]["run_ms"] for rec in records) / len(records),
            "jobs_per_worker_min_max": [min(per_node.values()), max(per_node.values())],
            "worker_cpu_ms_per_job": cpu_used["workers"] * 1000 / len(records),
            "cores_obtained": cpu_used["workers"] / window,
            "redis_cpu_ms_per_job": cpu_used["redis"] * 1000 / len(records),
            "load_avg_1m_before": round(load_before, 2)}


def main(argv: list[str] | None = None) -> int:
    """Run every worker count, print the table and write bench/results/scaleout.json."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--jobs-per-worker", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-scaleout-"))
    server = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": server.url, "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_WORKER_METRICS_PORT": "0",
           "GPUQ_WORKER_SOFT_SHUTDOWN_S": "1", "GPUQ_SYNTHETIC_JOBS": "true", "OMP_NUM_THREADS": "1"}
    os.environ["GPUQ_REDIS_URL"] = server.url
    try:
        assert server.proc is not None
        runs = [run_once(env, server.url, server.proc.pid, tmp, n, args) for n in counts]
    finally:
        server.stop()
    out = summarize(runs, args)
    report(out)
    return 0


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Efficiencies against the 1-worker run (the first one) and the ideal per-job cost."""
    base = runs[0]["jobs_per_s"] / runs[0]["workers"]
    c = cores()
    for run in runs:
        n = run["workers"]
        run["efficiency"] = run["jobs_per_s"] / (n * base)
        run["efficiency_per_available_core"] = run["jobs_per_s"] / (min(n, c) * base)
        # What the efficiency would be with one free core per worker: gpuq's CPU cost per job at n workers
        # against 1 worker. It is immune to other processes taking cores, which throughput is not.
        run["cpu_efficiency"] = runs[0]["worker_cpu_ms_per_job"] / run["worker_cpu_ms_per_job"]
    ideal = 1000.0 / (args.steps * args.step_ms)
    return {"cores": c, "job_cpu_ms": args.steps * args.step_ms, "ideal_jobs_per_s_per_worker": ideal,
            "one_worker_vs_ideal": base / ideal, "runs": runs,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def report(out: dict[str, Any]) -> None:
    """Print the table and write the JSON summary."""
    print(f"\nfixed-cost synthetic job: {out['job_cpu_ms']:.0f} ms busy loop; {out['cores']} cores; "
          f"1 worker runs at {out['one_worker_vs_ideal']:.2f}x of the no-overhead ideal "
          f"({out['ideal_jobs_per_s_per_worker']:.1f} jobs/s)")
    print(f"{'workers':>8} {'jobs':>6} {'jobs/s':>8} {'per worker':>11} {'efficiency':>11} "
          f"{'per avail. core':>16} {'worker CPU ms/job':>18} {'CPU efficiency':>15} {'cores obtained':>15} "
          f"{'redis CPU ms/job':>17} {'load before':>12}")
    for run in out["runs"]:
        print(f"{run['workers']:>8} {run['jobs']:>6} {run['jobs_per_s']:>8.2f} "
              f"{run['jobs_per_s_per_worker']:>11.2f} "
              f"{run['efficiency']:>11.2f} {run['efficiency_per_available_core']:>16.2f} "
              f"{run['worker_cpu_ms_per_job']:>18.1f} {run['cpu_efficiency']:>15.2f} "
              f"{run['cores_obtained']:>15.2f} {run['redis_cpu_ms_per_job']:>17.2f} "
              f"{run['load_avg_1m_before']:>12.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaleout.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'scaleout.json'}")


if __name__ == "__main__":
    sys.exit(main())
