"""The OpenAI-compatible routes' extra cost over the native API, for the same embedding and chat jobs.

One stack (Redis, a threads-pool inference worker with dynamic batching, the API); for each workload the same
job is sent both ways by concurrent clients, in alternating rounds so drift hits both alike:

- embeddings: ``POST /v1/jobs`` (feature-extraction, ``Prefer: wait``) vs ``POST /v1/embeddings`` on the packaged
  all-MiniLM-L6-v2, one sentence each, the body the openai SDK sends (base64 floats, ``x-stainless-retry-count``);
- chat: ``POST /v1/jobs`` (chat task, ``Prefer: wait``) vs ``POST /v1/chat/completions`` on the tiny chat GPT-2,
  greedy, 8 new tokens.

It prints requests/s and the API process's CPU time per request for each, and the ratios OpenAI / native
(target: within 10%).

First, in the same run, the submit alone, as bench/submit.py measures the native one: no worker, an API whose
OpenAI calls give up waiting after ``SUBMIT_WAIT_S`` (504, the job stays queued), the native submit with
``Prefer: wait`` of the same length (202), so each request is one submit and one look at the job. ``--connections``
keep-alive connections from bench/load.py's generator for ``--seconds`` per round, API CPU per submit from its
/proc counters, alternating rounds. Writes bench/results/openai_compat.json.

    python -m bench.openai_compat [--requests 200] [--concurrency 8] [--rounds 3] [--seconds 5] [--connections 64]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import TreeCPU, run_load  # noqa: E402
from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from gpuq.worker.devmodels import ensure_built, packaged_minilm_path  # noqa: E402
from tests.support.processes import start_api, start_worker, wait_for, worker_alive  # noqa: E402

KEY = "bench-key-0123456789"
SENTENCE = "A man is eating a piece of bread."
MESSAGES = [{"role": "user", "content": "where is the queue"}]
SDK_HEADERS = {"x-stainless-retry-count": "0", "x-stainless-lang": "python"}
Request = tuple[str, dict[str, Any], dict[str, str]]
SUBMIT_WAIT_S = 0.001  # how long a request of the submit phase waits for its job (no worker runs)


def workloads(minilm: str, chat: str) -> dict[str, dict[str, Request]]:
    """(path, body, headers) of the same job through each route."""
    wait = {"Prefer": "wait=60"}
    return {
        "embeddings": {
            "native": ("/v1/jobs", {"kind": "inference", "model": minilm, "inputs": [SENTENCE],
                                    "params": {"task": "feature-extraction", "normalize": True}}, wait),
            "openai": ("/v1/embeddings", {"model": minilm, "input": SENTENCE, "encoding_format": "base64"},
                       SDK_HEADERS)},
        "chat": {
            "native": ("/v1/jobs", {"kind": "inference", "model": chat, "inputs": [MESSAGES],
                                    "params": {"task": "chat", "max_new_tokens": 8}}, wait),
            "openai": ("/v1/chat/completions", {"model": "gpt2-chat", "messages": MESSAGES, "max_tokens": 8,
                                                "temperature": 0}, SDK_HEADERS)},
    }


def api_cpu(pid: int) -> float:
    """CPU seconds of the API process and its children so far."""
    proc = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


def run(url: str, request: Request, n: int, concurrency: int, cpu: Callable[[], float]) -> dict[str, float]:
    """``n`` requests from ``concurrency`` clients: requests/s and API CPU ms per request."""
    path, body, headers = request
    left, lock, failures = [n], threading.Lock(), []

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}", **headers}, timeout=120) as c:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                resp = c.post(path, json=body)
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    cpu0, t0 = cpu(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, used = time.perf_counter() - t0, cpu() - cpu0
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return {"rps": n / elapsed, "api_cpu_ms": used * 1000 / n}


def measure(url: str, cases: dict[str, Request], args: argparse.Namespace, cpu: Callable[[], float]) -> dict[str, Any]:
    """Alternating rounds of each route; the median round of each."""
    for request in cases.values():
        run(url, request, max(8, args.concurrency), args.concurrency, cpu)  # warm up: models resident
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, request in cases.items():
            rounds[name].append(run(url, request, args.requests, args.concurrency, cpu))
    out: dict[str, Any] = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "api_cpu_ms")}
                           for name, rs in rounds.items()}
    out["rps_ratio"] = out["openai"]["rps"] / out["native"]["rps"]
    out["cpu_ratio"] = out["openai"]["api_cpu_ms"] / out["native"]["api_cpu_ms"]
    return out


def submit_round(url: str, request: Request, r: redis.Redis, api_pid: int, args: argparse.Namespace
                 ) -> dict[str, float]:
    """One load run of a route without a worker: submits/s and API CPU ms per submit (every request one job)."""
    path, body, headers = request
    if path == "/v1/jobs":
        headers = {**headers, "Prefer": f"wait={SUBMIT_WAIT_S}"}
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **headers}
    r.flushdb()
    cpu = TreeCPU(api_pid).start()
    load = run_load(f"{url}{path}", json.dumps(body).encode(), headers, args.connections, args.seconds)
    used = cpu.stop()
    stored = r.zcard("gpuq:tenant:bench:jobs")
    if load.requests == 0 or stored < 0.95 * load.requests:
        raise RuntimeError(f"{path}: {load.requests} answered, {stored} jobs stored")
    return {"submits_per_s": load.requests / load.seconds, "api_cpu_ms": 1000 * used / load.requests}


def measure_submits(url: str, cases: dict[str, Request], r: redis.Redis, api_pid: int,
                    args: argparse.Namespace) -> dict[str, Any]:
    """Alternating submit rounds of each route; the median round of each."""
    for request in cases.values():
        path, body, headers = request
        run_load(f"{url}{path}", json.dumps(body).encode(),
                 {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **headers},
                 args.connections, 1)  # warm up: templates, connections, caches
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, request in cases.items():
            rounds[name].append(submit_round(url, request, r, api_pid, args))
    out: dict[str, Any] = {name: {k: statistics.median(x[k] for x in rs) for k in ("submits_per_s", "api_cpu_ms")}
                           for name, rs in rounds.items()}
    out["cpu_ratio"] = out["openai"]["api_cpu_ms"] / out["native"]["api_cpu_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="requests per route and round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="length of a submit round")
    parser.add_argument("--connections", type=int, default=64, help="connections of the submit phase")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-openai-"))
    chat = str(ensure_built(tmp / "models", "gpt2-chat"))
    minilm = str(packaged_minilm_path())
    server = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": server.url, "GPUQ_API_KEYS": f"bench:{KEY}", "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "GPUQ_MODEL_ROOTS": os.pathsep.join([str(tmp / "models"), minilm]), "GPUQ_ENV": "test"}
    out: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency, "rounds": args.rounds,
                           "seconds": args.seconds, "connections": args.connections}
    r = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        api, url = start_api({**env, "GPUQ_OPENAI_WAIT_S": str(SUBMIT_WAIT_S)}, tmp)
        try:
            out["submit"] = {name: measure_submits(url, cases, r, api.pid, args)
                             for name, cases in workloads(minilm, chat).items()}
        finally:
            api.stop()
        r.flushall()
    except BaseException:
        server.stop()
        raise
    worker = start_worker(env, tmp, "bench", pool="threads", concurrency=2 * args.concurrency)
    api, url = start_api(env, tmp)
    try:
        wait_for(lambda: worker_alive(server.url, "bench@"), 90, "worker")
        for name, cases in workloads(minilm, chat).items():
            out[name] = measure(url, cases, args, lambda: api_cpu(api.pid))
    finally:
        api.stop()
        worker.stop()
        server.stop()
    report(out)
    return 0


def report(out: dict[str, Any]) -> None:
    """Print the table and write the JSON summary."""
    print(f"\nsubmit alone (no worker, one look at the job): {out['connections']} connections, "
          f"{out['seconds']:g} s rounds, median of {out['rounds']}; baseline: the native POST /v1/jobs")
    print(f"  {'workload':<11} {'route':<7} {'submits/s':>10} {'API CPU ms/submit':>18}")
    for name in ("embeddings", "chat"):
        m = out["submit"][name]
        for route in ("native", "openai"):
            print(f"  {name:<11} {route:<7} {m[route]['submits_per_s']:10.1f} {m[route]['api_cpu_ms']:18.3f}")
        print(f"  {name:<11} {'ratio':<7} {'':>10} {m['cpu_ratio']:17.2f}x   (target: CPU <= 1.10x)")
    print(f"\n{out['requests']} requests per route and round, {out['concurrency']} concurrent clients, "
          f"median of {out['rounds']} rounds; baseline: the native POST /v1/jobs with Prefer: wait")
    print(f"  {'workload':<11} {'route':<7} {'req/s':>8} {'API CPU ms/req':>15}")
    for name in ("embeddings", "chat"):
        m = out[name]
        for route in ("native", "openai"):
            print(f"  {name:<11} {route:<7} {m[route]['rps']:8.1f} {m[route]['api_cpu_ms']:15.2f}")
        print(f"  {name:<11} {'ratio':<7} {m['rps_ratio']:7.2f}x {m['cpu_ratio']:14.2f}x   (target: req/s >= 0.90x, "
              "CPU <= 1.10x)")
    path = ROOT / "bench" / "results" / "openai_compat.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
