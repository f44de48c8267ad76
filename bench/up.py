"""The README's embedding figures through a plain ``gpuq up`` next to the tuned stack of bench/inference.py,
measured in the same run.

The tuned stack is bench/inference.py's: one threads-pool worker with batches of 64, two passes at once with
one intra-op thread each, task events off (GPUQ_BATCH_MAX_SIZE=64, GPUQ_BATCH_EXECUTORS=2,
GPUQ_TORCH_THREADS=1, GPUQ_TASK_EVENTS=false). The plain one is ``gpuq up`` with nothing set, as a newcomer
starts it (Flower included, so its inference worker sends task events; ``--no-flower`` measures without) (its own var/ and Redis, the topology it picks for the cores it sees). Both stacks stay up
for the whole run and take turns, in interleaved rounds (the order alternating per round), on the same
one-sentence all-MiniLM-L6-v2 jobs: one job per ``POST /v1/jobs`` and 64 per ``POST /v1/jobs/batch``; each
ratio (plain / tuned) is taken within a round and the median round is reported (target: >= 0.8x).

    python -m bench.up [--jobs 400] [--in-flight 256] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402
from gpuq.worker.devmodels import packaged_minilm_path  # noqa: E402

from bench.inference import KEY, Stack, body, run_bulk, run_jobs  # noqa: E402
from bench.throughput import sentences  # noqa: E402
from tests.support.upstack import Up, up_env  # noqa: E402

TUNED = {"GPUQ_BATCH_MAX_SIZE": "64", "GPUQ_BATCH_EXECUTORS": "2", "GPUQ_TORCH_THREADS": "1",
         "GPUQ_TASK_EVENTS": "false"}


def tuned_stack(tmp: Path) -> tuple[Stack, EmbeddedRedis, str]:
    """bench/inference.py's stack and its worker, warmed."""
    model = str(packaged_minilm_path())
    redis = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": redis.url, "GPUQ_API_KEYS": f"bench:{KEY}", "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_MODEL_ROOTS": model, "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", **TUNED}
    stack = Stack(env, tmp, redis.proc.pid if redis.proc else 0)
    stack.worker("tuned")
    return stack, redis, model


def plain_up(tmp: Path, flower: bool) -> tuple[Up, str, str]:
    """A plain `gpuq up` in its own directory: (it, its dev key, the packaged model's path there)."""
    env = {k: v for k, v in up_env().items() if k not in TUNED and k != "OMP_NUM_THREADS"}
    env["HF_HUB_OFFLINE"] = "1"
    up = Up(tmp / "up", *([] if flower else ["--no-flower"]), env=env)
    key = up.wait_banner()
    return up, key, str(tmp / "up" / "var" / "models" / "all-MiniLM-L6-v2")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds over both stacks; medians of each figure and of the per-round ratios."""
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-up-"))
    texts = sentences(args.jobs)
    stack, redis, tuned_model = tuned_stack(tmp / "tuned")
    up, up_key, up_model = plain_up(tmp, not args.no_flower)
    sides = {"tuned": (stack.url, KEY, [body(tuned_model, t) for t in texts]),
             "up": (up.url, up_key, [body(up_model, t) for t in texts])}
    rounds: list[dict[str, float]] = []
    try:
        for url, key, bodies in sides.values():  # load the model on each side before timing anything
            run_jobs(url, bodies[:64], 64, key)
        for i in range(args.rounds):
            row: dict[str, float] = {}
            for side in (("tuned", "up") if i % 2 == 0 else ("up", "tuned")):
                url, key, bodies = sides[side]
                row[f"{side}_single"], _ = run_jobs(url, bodies, args.in_flight, key)
                row[f"{side}_bulk"], _ = run_bulk(url, bodies, args.in_flight, args.per_request, key)
            row["ratio_single"] = row["up_single"] / row["tuned_single"]
            row["ratio_bulk"] = row["up_bulk"] / row["tuned_bulk"]
            rounds.append(row)
            print(f"  round {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    finally:
        up.signal(signal.SIGTERM)
        up.kill_all()
        stack.stop()
        redis.stop()
    out: dict[str, Any] = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    out.update({"rounds": rounds, "jobs": args.jobs, "in_flight": args.in_flight, "cpus": os.cpu_count(),
                "load_avg": os.getloadavg()[0]})
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, print the table, write bench/results/up.json."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--per-request", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-flower", action="store_true", help="the plain stack without Flower (task events off)")
    out = measure(parser.parse_args(argv))
    print(f"\nall-MiniLM-L6-v2, {out['jobs']} one-sentence jobs, {out['in_flight']} in flight, {out['cpus']} CPUs, "
          f"median of {len(out['rounds'])} interleaved rounds (load average at the end {out['load_avg']:.1f})")
    for how in ("single", "bulk"):
        print(f"  {how:<7} tuned {out[f'tuned_{how}']:7.1f} jobs/s   plain gpuq up {out[f'up_{how}']:7.1f} jobs/s"
              f"   plain / tuned {out[f'ratio_{how}']:.2f}x (target >= 0.8x)")
    path = ROOT / "bench" / "results" / "up.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
