"""The job path at queue speed: each target beside its baseline, measured in one run.

Figures (targets in brackets):
  submit     single ``POST /v1/jobs`` accepted per second by one API process and its own CPU per submit, from
             its /proc counters (>= 1,000/s, <= 1.0 ms), 64 keep-alive connections, for a no-op ``synthetic`` job
             and an embedding ``inference`` job on all-MiniLM-L6-v2; baseline: the same API submitting through
             Celery's publish in its thread pool (``GPUQ_SUBMIT_ONE_TRIP=false``). Redis's and the load
             generator's CPU beside them (bench/load.py: wrk when installed, else a lean asyncio client). No
             worker runs, so only the submit path is measured: the jobs wait in Redis.
  framework  CPU per no-op job of API + worker + Redis against a bare Celery task's client + worker + Redis
             (<= 2x; the worker's share <= 1.5 ms); both workers prefork with one child (``gpuq worker``'s
             default; bench/bare_celery.py), the jobs submitted 64 at a time and run to the end
  roundtrip  p50 of a sequential no-op submit with ``Prefer: wait`` answered with the finished record, against a
             bare Celery ``delay().get()`` on the same Redis, alternating (<= bare + 5 ms)
  inference  one job per request on all-MiniLM-L6-v2 against the direct batched call (>= 0.7x, stretch 0.8x),
             with bench/inference.py's client, baseline and CPU inference worker settings, in interleaved rounds
  scaling    accepted no-op submits/s with ``gpuq api --workers 1`` and ``--workers 2`` (>= 0.9 N x one process)
             and Redis's CPU per submit, from which the Redis CPU that 8 processes at full speed would need
Every service gets ``GPUQ_TASK_EVENTS=false`` (as in bench/inference.py) unless it is set. Writes
bench/results/submit.json.

    python -m bench.submit [--seconds 10] [--connections 64] [--jobs 2000] [--trips 200] [--rounds 3]
                           [--only submit,framework,roundtrip,inference,scaling]
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
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.inference import KEY, BareCelery, bench_env, direct_best, run_jobs  # noqa: E402
from bench.inference import body as embed_body  # noqa: E402
from bench.load import TreeCPU, run_load  # noqa: E402
from bench.throughput import sentences  # noqa: E402
from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from gpuq.worker.devmodels import packaged_minilm_path  # noqa: E402
from tests.support.processes import Service, start_worker, wait_for, worker_alive  # noqa: E402

NOOP = {"kind": "synthetic", "model": "noop", "params": {"steps": 0}}
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


class Bench:
    """A Redis and the services one phase starts on it."""

    def __init__(self, tmp: Path, model: str) -> None:
        self.tmp, self.model = tmp, model
        self.redis = EmbeddedRedis(tmp / "redis").start()
        self.env = bench_env(self.redis.url, tmp, model)
        self.r = redis.Redis.from_url(self.redis.url, decode_responses=True)
        self.services: list[Service] = []

    def api(self, workers: int = 1, **env: str) -> tuple[Service, str]:
        """Start ``gpuq api --workers N`` and wait until it answers."""
        from gpuq.common.embedded_redis import free_port

        port = free_port()
        svc = Service("api", {**self.env, "GPUQ_API_PORT": str(port), **env}, self.tmp, f"api-{port}",
                      "--log-level", "warning", "--workers", str(workers))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60, "API /healthz")
        self.services.append(svc)
        return svc, url

    def worker(self, name: str, pool: str = "prefork", **env: str) -> Service:
        svc = start_worker({**self.env, **env}, self.tmp, name, pool=pool)
        wait_for(lambda: worker_alive(self.env["GPUQ_REDIS_URL"], f"{name}@"), 120, f"worker {name}")
        self.services.append(svc)
        return svc

    def stop(self, svc: Service) -> None:
        svc.stop()
        self.services.remove(svc)

    def stop_all(self) -> None:
        """Stop every service a phase started and empty Redis: the next phase starts from nothing."""
        for svc in list(self.services):
            self.stop(svc)
        self.r.flushall()

    def close(self) -> None:
        self.stop_all()
        self.redis.stop()


def submits(b: Bench, url: str, api: Service, body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Accepted submits/s and CPU ms per accepted submit of the API, Redis and the load generator."""
    raw = json.dumps(body).encode()
    run_load(f"{url}/v1/jobs", raw, HEADERS, args.connections, 2)  # warm: templates, connections, caches
    b.r.flushdb()
    b.r.config_resetstat()
    cpu_api, cpu_redis = TreeCPU(api.pid).start(), TreeCPU(b.redis.proc.pid).start()
    load = run_load(f"{url}/v1/jobs", raw, HEADERS, args.connections, args.seconds)
    api_s, redis_s = cpu_api.stop(), cpu_redis.stop()
    stored = b.r.zcard("gpuq:tenant:bench:jobs")
    n = max(load.accepted, 1)
    commands = per_job(b.r, n)
    b.r.flushdb()
    return {"accepted_per_s": load.accepted / load.seconds, "refused": load.requests - load.accepted,
            "stored": stored, "api_cpu_ms": 1000 * api_s / n, "redis_cpu_ms": 1000 * redis_s / n,
            "client_cpu_ms": 1000 * load.client_cpu_s / n, "load_tool": load.tool,
            "redis_calls_per_submit": sum(commands.values()), "redis_commands_per_submit": commands}


def per_job(r: redis.Redis, jobs: int) -> dict[str, float]:
    """Redis commands run per job since the last CONFIG RESETSTAT (INFO commandstats; a script's own commands
    count as well as the script call), most frequent first."""
    stats = r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) / jobs for name, v in stats.items()}
    calls.pop("info", None)
    return dict(sorted(calls.items(), key=lambda kv: -kv[1])[:12])


def phase_submit(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Both submit paths, no-op and embedding jobs."""
    jobs = {"noop": NOOP, "embedding": embed_body(b.model, "the quick brown fox jumps over the lazy dog")}
    out: dict[str, Any] = {}
    for path, one_trip in (("celery_publish", "false"), ("one_trip", "true")):
        svc, url = b.api(GPUQ_SUBMIT_ONE_TRIP=one_trip)
        for name, body in jobs.items():
            out[f"{path}_{name}"] = submits(b, url, svc, body, args)
            print(f"  submit {path} {name}: {_fmt(out[f'{path}_{name}'])}", flush=True)
        b.stop(svc)
    return out


async def _submit_n(url: str, n: int, concurrency: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(url, headers=HEADERS) as session:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem, session.post("/v1/jobs", json=NOOP) as resp:
                assert resp.status == 202, await resp.text()
        await asyncio.gather(*(one() for _ in range(n)))


def _finished(r: redis.Redis) -> int:
    return int(r.hget("gpuq:stats", "finished|synthetic|succeeded") or 0)


def phase_framework(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """CPU per no-op job: gpuq (API + worker + Redis) against bare Celery (client + worker + Redis)."""
    api, url = b.api()
    worker = b.worker("noop")
    asyncio.run(_submit_n(url, 20, 8))  # warm the worker's pool child
    wait_for(lambda: _finished(b.r) >= 20, 60, "warm-up jobs")
    start = _finished(b.r)
    b.r.config_resetstat()
    meters = {name: TreeCPU(pid).start() for name, pid in
              (("api", api.pid), ("worker", worker.pid), ("redis", b.redis.proc.pid))}
    t0, mine = time.perf_counter(), time.process_time()
    asyncio.run(_submit_n(url, args.jobs, 64))
    wait_for(lambda: _finished(b.r) >= start + args.jobs, 600, "no-op jobs", interval=0.05)
    gpuq = {name: 1000 * m.stop() / args.jobs for name, m in meters.items()}
    gpuq["client"] = 1000 * (time.process_time() - mine) / args.jobs
    gpuq_rate = args.jobs / (time.perf_counter() - t0)
    gpuq_commands = per_job(b.r, args.jobs)
    b.stop(worker)
    b.stop(api)
    bare = BareCelery(b.env, b.tmp, warm_model=False)
    try:
        b.r.config_resetstat()
        meters = {"worker": TreeCPU(bare.proc.pid).start(), "redis": TreeCPU(b.redis.proc.pid).start()}
        t0, mine = time.perf_counter(), time.process_time()
        for result in [bare.noop.delay() for _ in range(args.jobs)]:
            result.get(timeout=300)
        base = {name: 1000 * m.stop() / args.jobs for name, m in meters.items()}
        base["client"] = 1000 * (time.process_time() - mine) / args.jobs
        bare_rate = args.jobs / (time.perf_counter() - t0)
        bare_commands = per_job(b.r, args.jobs)
    finally:
        bare.stop()
    total = gpuq["api"] + gpuq["worker"] + gpuq["redis"]
    base_total = base["client"] + base["worker"] + base["redis"]
    return {"gpuq_cpu_ms": gpuq, "bare_cpu_ms": base, "gpuq_cpu_ms_total": total, "bare_cpu_ms_total": base_total,
            "ratio_cpu_gpuq_vs_bare": total / base_total, "gpuq_noop_jobs_per_s": gpuq_rate,
            "bare_noop_jobs_per_s": bare_rate, "gpuq_redis_commands_per_job": gpuq_commands,
            "bare_redis_commands_per_job": bare_commands}


def phase_roundtrip(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Sequential p50: HTTP submit with Prefer: wait -> finished record, against delay().get(), alternating."""
    _, url = b.api()
    b.worker("trip")
    bare = BareCelery(b.env, b.tmp, warm_model=False)
    trips: dict[str, list[float]] = {"gpuq": [], "bare": []}
    try:
        with httpx.Client(base_url=url, headers={**HEADERS, "Prefer": "wait=10"}, timeout=30) as client:
            for i in range(2 * args.trips + 10):
                t0 = time.perf_counter()
                if i % 2:
                    job = client.post("/v1/jobs", json=NOOP).json()
                    assert job["status"] == "succeeded", job
                else:
                    bare.noop.delay().get(timeout=10)
                trips["gpuq" if i % 2 else "bare"].append(1000 * (time.perf_counter() - t0))
    finally:
        bare.stop()
    p50 = {name: statistics.median(values[5:]) for name, values in trips.items()}
    return {"p50_ms_gpuq": p50["gpuq"], "p50_ms_bare": p50["bare"], "p50_ms_over_bare": p50["gpuq"] - p50["bare"]}


def phase_inference(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """One job per request against the direct batched call, interleaved rounds (bench/inference.py)."""
    _, url = b.api()
    b.worker("infer", pool="threads")
    texts = sentences(args.inference_jobs)
    bodies = [embed_body(b.model, t) for t in texts]
    run_jobs(url, bodies[:64], 64)  # load the model
    rounds = []
    for _ in range(args.rounds):
        direct, _threads = direct_best(texts)
        gpuq, _records = run_jobs(url, bodies, args.in_flight)
        rounds.append({"direct_batched": direct, "gpuq_http": gpuq, "ratio": gpuq / direct})
        print(f"  inference round: {_fmt(rounds[-1])}", flush=True)
    return {"inference_rounds": rounds, **{k: statistics.median(r[k] for r in rounds) for k in rounds[0]}}


def phase_scaling(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Accepted no-op submits/s with 1 and 2 API processes."""
    out: dict[str, Any] = {}
    for n in (1, 2):
        svc, url = b.api(workers=n)
        time.sleep(1.0)  # every process up
        out[f"workers_{n}"] = submits(b, url, svc, NOOP, args)
        print(f"  scaling --workers {n}: {_fmt(out[f'workers_{n}'])}", flush=True)
        b.stop(svc)
    one, two = out["workers_1"], out["workers_2"]
    out["scaling_efficiency_2"] = two["accepted_per_s"] / (2 * one["accepted_per_s"])
    # Redis runs commands on one core: what 8 processes at one process's rate would ask of it.
    out["redis_cores_for_8"] = 8 * one["accepted_per_s"] * one["redis_cpu_ms"] / 1000
    return out


PHASES = {"submit": phase_submit, "framework": phase_framework, "roundtrip": phase_roundtrip,
          "inference": phase_inference, "scaling": phase_scaling}


def _fmt(row: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def main(argv: list[str] | None = None) -> int:
    """Run the chosen phases, print the table, write the summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each submit load run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2000, help="no-op jobs per side for the framework CPU")
    parser.add_argument("--trips", type=int, default=200, help="sequential round trips per side")
    parser.add_argument("--inference-jobs", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(PHASES))
    args = parser.parse_args(argv)
    os.environ.setdefault("GPUQ_TASK_EVENTS", "false")
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-submit-"))
    out: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0],
                           "seconds": args.seconds, "connections": args.connections,
                           "task_events": os.environ["GPUQ_TASK_EVENTS"]}
    b = Bench(tmp, str(packaged_minilm_path()))
    try:
        for phase, run in PHASES.items():
            if phase in args.only.split(","):
                print(f"{phase} ...", flush=True)
                try:
                    out[phase] = run(b, args)
                finally:
                    b.stop_all()
    finally:
        b.close()
    out["load_avg_at_end"] = os.getloadavg()[0]
    from bench.submit_report import report

    report(out, ROOT / "bench" / "results" / "submit.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
