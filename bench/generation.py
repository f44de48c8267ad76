"""Text generation: gpuq's continuous batching against the baselines, the same workload in one run.

Workload (bench/genwork.py, fixed seed): ``--requests`` requests, prompts of 8..256 tokens, 8..128 new tokens
each (``min_new_tokens = max_new_tokens``, greedy), the first half at once and the second half arriving one
every ``--gap-ms`` while the first half runs, on a GPT-2 of ``--layers`` x ``--width`` built from its config
(random weights).

  (a) direct ``model.generate``, one request at a time
  (b) direct static batching as gpuq's static path does it: the requests that have arrived, up to
      ``--static-batch``, left-padded into one ``generate`` running to its longest member
  (c) transformers' continuous batching (``ContinuousBatchingManager``) called directly, no queue
  (d) gpuq over HTTP, ``GPUQ_GENERATION_ENGINE=static`` (gpuq before continuous batching): one threads-pool
      worker, two executors of one intra-op thread each (the recommended CPU setting)
  (e) gpuq over HTTP with continuous batching: one threads-pool worker, ``--threads`` intra-op threads
  (f) gpuq's engine called directly (no queue, no HTTP): its scheduler alone, against (c)
For HTTP, every request is a job with ``stream: true``, submitted at its arrival time; first and last token
times are those of its first and last ``output`` events in Redis (stream ids, milliseconds).
Prints tokens/s, time to first token p50/p95, inter-token latency p50 and the ratios; writes
bench/results/generation.json.

    python -m bench.generation [--requests 64] [--layers 6 --width 512 --heads 8] [--only a,b,c,d,e,f]
    python -m bench.generation --smoke        # 16 requests on a 2 x 128 model, to see that it runs
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import genwork  # noqa: E402
from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive  # noqa: E402

KEY = "bench-key-0123456789"
METHODS = {"a": "direct generate, sequential", "b": "direct static batches", "c": "transformers continuous",
           "d": "gpuq HTTP, static path", "e": "gpuq HTTP, continuous", "f": "gpuq engine, direct"}


def body(model: str, r: genwork.Request) -> dict[str, Any]:
    params = {"task": "text-generation", "max_new_tokens": r.max_new_tokens, "min_new_tokens": r.max_new_tokens,
              "stream": True}
    return {"kind": "inference", "model": model, "inputs": r.text(), "params": params}


def run_http(url: str, model: str, reqs: list[genwork.Request]) -> None:
    """Submit each request at its arrival time, wait for every job, read token times from its events."""
    headers = {"Authorization": f"Bearer {KEY}"}
    errors: list[BaseException] = []

    def one(r: genwork.Request, client: httpx.Client) -> None:
        try:
            delay = start + r.arrive_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            job = client.post("/v1/jobs", json=body(model, r)).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                job = client.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
            assert job["status"] == "succeeded", job
            stamps = output_times(client, job["id"])
            r.first_s, r.last_s = stamps[0] - start_wall, stamps[-1] - start_wall
            r.tokens = job["result"]["usage"]["completion_tokens"]
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)
        finally:
            client.close()

    # Clients connected and threads started before the clock: the client's own start-up is not gpuq's latency.
    clients = [httpx.Client(base_url=url, headers=headers, timeout=600) for _ in reqs]
    for client in clients:
        client.get("/healthz")
    threads = [threading.Thread(target=one, args=(r, c)) for r, c in zip(reqs, clients)]
    start_wall, start = time.time() + 0.5, time.perf_counter() + 0.5
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def output_times(client: httpx.Client, job_id: str) -> list[float]:
    """Wall-clock seconds of the job's ``output`` events (from their stream ids)."""
    text = client.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"}).text
    out, current = [], ""
    for line in text.splitlines():
        if line.startswith("id: "):
            current = line[4:]
        elif line == "event: output":
            out.append(int(current.split("-")[0]) / 1000)
    return out


class Stack:
    """Redis + API for the HTTP runs; one worker at a time."""

    def __init__(self, tmp: Path, model_root: Path) -> None:
        self.tmp = tmp
        self.redis = EmbeddedRedis(tmp / "redis").start()
        self.env = {**os.environ, "GPUQ_REDIS_URL": self.redis.url, "GPUQ_API_KEYS": f"bench:{KEY}",
                    "GPUQ_MODEL_ROOTS": str(model_root), "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"),
                    "GPUQ_DATA_DIR": str(tmp), "GPUQ_TASK_EVENTS": "false", "GPUQ_WORKER_METRICS_PORT": "0",
                    "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.api, self.url = start_api(self.env, tmp)
        self.worker: Service | None = None

    def start_worker(self, name: str, concurrency: int, **env: str) -> None:
        self.stop_worker()
        self.worker = start_worker({**self.env, **env}, self.tmp, name, pool="threads", concurrency=concurrency)
        wait_for(lambda: worker_alive(self.redis.url, f"{name}@"), 120, f"worker {name}")

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def stop(self) -> None:
        self.stop_worker()
        self.api.stop()
        self.redis.stop()


def warm(url: str, model: str) -> None:
    """Load the model (and build the engine) before the clock starts."""
    r = genwork.Request([1, 2, 3, 4], 2, 0.0)
    run_http(url, model, [r])


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-gen-"))
    model_dir = genwork.build_model(tmp / "models" / "gpt2-bench", args.layers, args.width, args.heads)
    work = genwork.workload(args.requests, args.gap_ms / 1000, (8, args.max_prompt), (8, args.max_new))
    results: dict[str, Any] = {}
    only = set(args.only.split(","))
    model = genwork.load(model_dir) if only & {"a", "b", "c", "f"} else None
    direct = {"a": lambda r: genwork.run_sequential(model, r),
              "b": lambda r: genwork.run_static(model, r, args.static_batch),
              "c": lambda r: genwork.run_library(model, r), "f": lambda r: genwork.run_engine(model, r)}
    for key in ("a", "b", "c", "f"):
        if key in only:
            results[key] = measure(key, lambda reqs, k=key: direct[k](reqs), work)
    if only & {"d", "e"}:
        stack = Stack(tmp, tmp / "models")
        concurrency = str(2 * args.requests)
        try:
            envs = {"d": {"GPUQ_GENERATION_ENGINE": "static", "GPUQ_BATCH_EXECUTORS": "2",
                          "GPUQ_TORCH_THREADS": "1"},
                    "e": {"GPUQ_GENERATION_ENGINE": "continuous", "GPUQ_TORCH_THREADS": str(args.threads)}}
            for key in ("d", "e"):
                if key in only:
                    stack.start_worker(f"gen-{key}", int(concurrency), **envs[key])
                    warm(stack.url, str(model_dir))
                    results[key] = measure(key, lambda reqs: run_http(stack.url, str(model_dir), reqs), work)
        finally:
            stack.stop()
    return {"config": vars(args), "results": results, "ratios": ratios(results)}


def measure(key: str, runner: Any, work: genwork.Workload) -> dict[str, float]:
    reqs = work.fresh()
    print(f"({key}) {METHODS[key]} ...", flush=True)
    runner(reqs)
    out = genwork.summary(reqs)
    print(f"    {out['tokens_per_s']:.1f} tokens/s, TTFT p50 {out['ttft_p50_ms']:.0f} ms, "
          f"ITL p50 {out['itl_p50_ms']:.1f} ms", flush=True)
    return out


def ratios(results: dict[str, Any]) -> dict[str, float]:
    out = {}
    for num, den, what in (("e", "b", "tokens_per_s"), ("e", "c", "tokens_per_s"), ("e", "d", "tokens_per_s"),
                           ("e", "a", "tokens_per_s"), ("c", "b", "tokens_per_s"), ("e", "c", "ttft_p50_ms"),
                           ("f", "c", "tokens_per_s"), ("f", "c", "ttft_p50_ms")):
        if num in results and den in results:
            out[f"{num}/{den} {what}"] = results[num][what] / results[den][what]
    return out


def report(out: dict[str, Any]) -> None:
    print(f"\n{'':4}{'method':32}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}{'ITL p50':>9}")
    for key, r in out["results"].items():
        print(f"({key}) {METHODS[key]:32}{r['tokens_per_s']:10.1f}{r['ttft_p50_ms']:8.0f}ms"
              f"{r['ttft_p95_ms']:8.0f}ms{r['itl_p50_ms']:7.1f}ms")
    for name, value in out["ratios"].items():
        print(f"  {name}: {value:.2f}")
    print("targets: e/b tokens/s >= 2, e/c tokens/s >= 0.8, e/c ttft_p50_ms <= 2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--max-prompt", type=int, default=256)
    parser.add_argument("--max-new", type=int, default=128)
    parser.add_argument("--gap-ms", type=float, default=200.0)
    parser.add_argument("--static-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads")
    parser.add_argument("--only", default="a,b,c,d,e,f")
    parser.add_argument("--smoke", action="store_true", help="16 requests on a 2 x 128 model")
    parser.add_argument("--out", default=None, help="default: bench/results/generation[-smoke].json")
    args = parser.parse_args(argv)
    args.out = args.out or str(ROOT / "bench" / "results" / f"generation{'-smoke' if args.smoke else ''}.json")
    if args.smoke:
        args.requests, args.layers, args.width, args.heads, args.gap_ms = 16, 2, 128, 4, 50.0
        args.max_prompt, args.max_new = 64, 32
    out = run(args)
    report(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
