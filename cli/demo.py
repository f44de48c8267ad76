"""``gpuq demo``: build tiny local models and push a few jobs through the running API."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import httpx
from gpuq.common.settings import get_settings


def _models() -> dict[str, str]:
    from gpuq.worker.devmodels import (build_tiny_bert_classifier, build_tiny_chat_gpt2, build_tiny_gpt2,
                                       packaged_minilm_path)

    root = get_settings().data_dir.resolve() / "models"
    minilm = root / "all-MiniLM-L6-v2"  # where `gpuq up` lays the packaged model out
    return {"sentiment": str(build_tiny_bert_classifier(root / "bert-sentiment")),
            "gpt2": str(build_tiny_gpt2(root / "gpt2")),
            # The OpenAI-compatible chat route needs a model with a chat template (README, Speaking OpenAI).
            "gpt2-chat": str(build_tiny_chat_gpt2(root / "gpt2-chat")),
            "minilm": str(minilm if minilm.is_dir() else packaged_minilm_path())}


def demo_jobs(models: dict[str, str]) -> list[dict[str, Any]]:
    """The demo's job bodies."""
    return [
        {"kind": "inference", "model": models["minilm"], "inputs": ["gpuq keeps models resident.",
                                                                     "Jobs stream their progress."],
         "params": {"task": "feature-extraction", "normalize": True}},
        {"kind": "inference", "model": models["sentiment"], "inputs": "what a wonderful queue",
         "params": {"task": "sentiment-analysis"}},
        {"kind": "inference", "model": models["gpt2"], "inputs": "the worker",
         "params": {"task": "text-generation", "max_new_tokens": 8, "seed": 0}},
    ]


def _wait(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish in {timeout}s")


def _summary(job: dict[str, Any]) -> str:
    result = job.get("result")
    if job["params"].get("task") == "feature-extraction" and isinstance(result, list):
        result = [f"<{len(v)}-dim embedding, first values {v[:3]}>" for v in result]
    t = job["timings"]
    return (f"{job['params'].get('task'):<20} {job['status']:<10} wait {t['queue_wait_ms']:.0f} ms, "
            f"load {t['model_load_ms']:.0f} ms, run {t['run_ms']:.0f} ms\n    -> "
            f"{json.dumps(result if job['status'] == 'succeeded' else job['error'])[:300]}")


def run_demo(api_url: str | None = None, api_key: str | None = None) -> int:
    """Submit the demo jobs twice (the second round hits resident models) and print the outcomes."""
    api_url = api_url or os.environ.get("GPUQ_API_URL", "http://127.0.0.1:8000")
    api_key = api_key or os.environ.get("GPUQ_API_KEY", "")
    print("\nbuilding tiny demo models (random weights, built from configs) ...")
    bodies = demo_jobs(_models())
    failed = 0
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as client:
        for round_ in (1, 2):
            print(f"\nround {round_}:")
            ids = [client.post("/v1/jobs", json=b).raise_for_status().json()["id"] for b in bodies]
            for job_id in ids:
                job = _wait(client, job_id)
                failed += job["status"] != "succeeded"
                print("  " + _summary(job))
    print(f"\ndemo finished: {2 * len(bodies) - failed} succeeded, {failed} failed", file=sys.stderr if failed
          else sys.stdout)
    return 1 if failed else 0
