"""The same text-to-image generation through gpuq (API + worker, over HTTP) vs a direct pipeline call.

Both sides run the tiny Stable Diffusion pipeline built from configs, in float32 on the CPU with the same
thread count, the same seed, size and step count. Repetitions alternate (direct, gpuq, direct, ...) so
machine load drifts evenly over both. Reported, as medians:

- direct: ``pipe(...)`` returning PIL images, timed in this process (the model already loaded and warm);
- gpuq run_ms: the job's run time from its record (the worker's pipeline call plus per-step progress events,
  PNG encoding with metadata, artifact writes);
- gpuq wall: submit over HTTP until the client sees the terminal event on the job's SSE stream.

Ratios are direct / gpuq (1.0 = no overhead; the target is >= 0.95, i.e. per-step events cost < 5%).
Optionally the same with a preview every N steps. Writes bench/results/image.json.

    python -m bench.image [--size 64] [--steps 30] [--reps 5] [--preview-every 5]
"""
from __future__ import annotations

import argparse
import io
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

from common.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.processes import start_api, start_worker, wait_for, worker_alive  # noqa: E402

KEY = "bench-key-0123456789"
PROMPT = "a lighthouse on a cliff at dawn, oil painting"
SEED = 1234


class Direct:
    """The pipeline in this process, loaded the way the worker loads it."""

    def __init__(self, model: Path) -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        self.pipe = AutoPipelineForText2Image.from_pretrained(str(model), dtype=torch.float32).to("cpu")
        self.pipe.set_progress_bar_config(disable=True)

    def run(self, size: int, steps: int) -> tuple[float, bytes]:
        """(ms, RGB pixels of the image) for one generation."""
        import torch

        start = time.perf_counter()
        image = self.pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, width=size, height=size,
                          generator=[torch.Generator("cpu").manual_seed(SEED)]).images[0]
        return (time.perf_counter() - start) * 1000, image.convert("RGB").tobytes()


def _terminal_via_sse(client: httpx.Client, job_id: str) -> str:
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=600) as resp:
        for line in resp.iter_lines():
            if line.startswith("event: ") and line[7:] in ("completed", "failed", "cancelled"):
                return line[7:]
    raise RuntimeError(f"event stream of {job_id} ended without a terminal event")


def gpuq_run(client: httpx.Client, model: str, size: int, steps: int, preview_every: int | None
             ) -> tuple[float, float, dict[str, Any]]:
    """(wall ms over HTTP, run_ms from the record, record) for one job."""
    params: dict[str, Any] = {"prompt": PROMPT, "num_inference_steps": steps, "guidance_scale": 7.5,
                              "width": size, "height": size, "seed": SEED}
    if preview_every:
        params["preview_every"] = preview_every
    start = time.perf_counter()
    job = client.post("/v1/jobs", json={"kind": "image", "model": model, "params": params}).json()
    event = _terminal_via_sse(client, job["id"])
    wall = (time.perf_counter() - start) * 1000
    record = client.get(f"/v1/jobs/{job['id']}").json()
    assert event == "completed" and record["status"] == "succeeded", record
    return wall, float(record["timings"]["run_ms"]), record


def _pixels(client: httpx.Client, record: dict[str, Any]) -> bytes:
    from PIL import Image

    data = client.get(f"/v1/jobs/{record['id']}/artifacts/images/image-0.png").content
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").tobytes()


def measure(args: argparse.Namespace, client: httpx.Client, direct: Direct, model: str) -> dict[str, Any]:
    """Alternate direct and gpuq runs; medians and ratios."""
    direct.run(args.size, args.steps)  # warm both sides: first calls pay allocator and kernel set-up
    gpuq_run(client, model, args.size, args.steps, None)
    d_ms, wall, run_ms, preview_run, preview_wall = [], [], [], [], []
    same_pixels = True
    for _ in range(args.reps):
        ms, pixels = direct.run(args.size, args.steps)
        d_ms.append(ms)
        w, r, record = gpuq_run(client, model, args.size, args.steps, None)
        wall.append(w)
        run_ms.append(r)
        same_pixels = same_pixels and _pixels(client, record) == pixels
        if args.preview_every:
            w, r, _ = gpuq_run(client, model, args.size, args.steps, args.preview_every)
            preview_wall.append(w)
            preview_run.append(r)
    out: dict[str, Any] = {
        "size": args.size, "steps": args.steps, "reps": args.reps, "threads": args.threads,
        "direct_ms": statistics.median(d_ms), "gpuq_run_ms": statistics.median(run_ms),
        "gpuq_wall_ms": statistics.median(wall), "same_pixels": same_pixels,
        "direct_ms_all": d_ms, "gpuq_run_ms_all": run_ms, "gpuq_wall_ms_all": wall,
    }
    out["ratio_direct_vs_gpuq_run"] = out["direct_ms"] / out["gpuq_run_ms"]
    out["ratio_direct_vs_gpuq_wall"] = out["direct_ms"] / out["gpuq_wall_ms"]
    out["overhead_per_step_ms"] = (out["gpuq_run_ms"] - out["direct_ms"]) / args.steps
    if args.preview_every:
        out.update(preview_every=args.preview_every, gpuq_preview_run_ms=statistics.median(preview_run),
                   gpuq_preview_wall_ms=statistics.median(preview_wall))
        out["ratio_direct_vs_gpuq_preview_run"] = out["direct_ms"] / out["gpuq_preview_run_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Start Redis, a worker and the API; run both variants; print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--preview-every", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    from worker.devmodels import ensure_built

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-bench-image-"))
    model = ensure_built(tmp / "models", "sd")
    redis = EmbeddedRedis(tmp / "redis").start()
    env = {**os.environ, "GPUQ_REDIS_URL": redis.url, "GPUQ_API_KEYS": f"bench:{KEY}", "GPUQ_DATA_DIR": str(tmp),
           "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_MODEL_ROOTS": str(tmp / "models"),
           "GPUQ_DEVICE": "cpu", "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    try:
        worker = start_worker(env, tmp, "bench-image", queues="image")
        wait_for(lambda: worker_alive(redis.url, "bench-image@"), 120, "worker")
        api, url = start_api(env, tmp)
        try:
            direct = Direct(model)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=600) as client:
                out = measure(args, client, direct, str(model))
        finally:
            api.stop()
            worker.stop()
    finally:
        redis.stop()
    report(out)
    return 0


def report(out: dict[str, Any]) -> None:
    """Print the table and write the JSON summary."""
    print(f"\ntiny SD, {out['size']}x{out['size']}, {out['steps']} steps, {out['reps']} reps, "
          f"{out['threads']} threads, float32 CPU (medians)")
    print(f"  direct pipeline call     {out['direct_ms']:9.1f} ms")
    print(f"  gpuq run_ms (record)     {out['gpuq_run_ms']:9.1f} ms   ratio {out['ratio_direct_vs_gpuq_run']:.3f}")
    print(f"  gpuq wall (HTTP + SSE)   {out['gpuq_wall_ms']:9.1f} ms   ratio {out['ratio_direct_vs_gpuq_wall']:.3f}")
    print(f"  overhead per step        {out['overhead_per_step_ms']:9.2f} ms (run_ms - direct) / steps")
    if "preview_every" in out:
        print(f"  gpuq run_ms, preview every {out['preview_every']}: {out['gpuq_preview_run_ms']:.1f} ms   "
              f"ratio {out['ratio_direct_vs_gpuq_preview_run']:.3f}")
    print(f"  same pixels as direct    {out['same_pixels']}")
    path = ROOT / "bench" / "results" / "image.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"  summary -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
