"""Dynamic batching on a real threads-pool worker: concurrent jobs share forward passes, keep their own
results and failures; the watchdog enforces time limits; batch inference reads a dataset from a Hub.
"""
from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import KEY_A, MODEL_ROOT
from tests.support.hub_server import HubServer
from tests.support.jobs import wait_status
from tests.support.models import tiny
from tests.support.stack import MiniStack, client_fixture, worker_env


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(tokens={"tok-alice": "alice"}) as server:
        yield server


@pytest.fixture(scope="module")
def stack(log_dir: Path, hub: HubServer, models: dict[str, str]) -> Iterator[MiniStack]:
    env = {**worker_env(), **hub.client_env(log_dir / "batching-hf"), "GPUQ_BATCH_MAX_WAIT_MS": "50",
           "GPUQ_JOB_TIME_LIMIT_S": "3", "GPUQ_TORCH_THREADS": "1"}  # 3 s: kinds without their own limit
    with MiniStack(env, log_dir, "batching") as s:
        s.worker("bt", concurrency=24)
        yield s


client = client_fixture(KEY_A)


def submit_all(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit every body at once (each request waits for its job) and return the final records."""
    def one(body: dict[str, Any]) -> dict[str, Any]:
        resp = client.post("/v1/jobs", json=body, headers={"Prefer": "wait=120"})
        return wait_status(client, resp.json()["id"])
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def embed(model: str, text: str) -> dict[str, Any]:
    return {"kind": "inference", "model": model, "inputs": text, "params": {"task": "feature-extraction"}}


def test_concurrent_jobs_share_passes_and_match_unbatched_results(client: httpx.Client,
                                                                   models: dict[str, str]) -> None:
    texts = [f"sentence {i} about {'cats' if i % 2 else 'the queue'} and more words" * (1 + i % 3)
             for i in range(16)]
    alone = [wait_status(client, client.post("/v1/jobs", json=embed(models["minilm"], t),
                                             headers={"Prefer": "wait=60"}).json()["id"]) for t in texts]
    assert all(r["batch"] == {"jobs": 1, "inputs": 1, "passes": 1, "group": 1} for r in alone)
    together = submit_all(client, [embed(models["minilm"], t) for t in texts])
    assert all(r["status"] == "succeeded" for r in together), together
    assert max(r["batch"]["jobs"] for r in together) > 1
    for a, b in zip(alone, together):
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a["result"], b["result"]))


def test_one_bad_input_fails_only_its_own_job(client: httpx.Client) -> None:
    gpt2 = tiny(MODEL_ROOT, "gpt2")
    params = {"task": "text-generation", "max_new_tokens": 3}
    good = [{"kind": "inference", "model": gpt2, "inputs": f"the worker {i}", "params": params}
            for i in range(6)]
    # Longer than the model's 1024 positions: known only once tokenized, on the worker.
    bad = {"kind": "inference", "model": gpt2, "inputs": "queue " * 1500, "params": params}
    records = submit_all(client, good[:3] + [bad] + good[3:])
    assert records[3]["status"] == "failed" and records[3]["error"]["type"] == "invalid_input"
    assert "1024 positions" in records[3]["error"]["message"] and records[3]["error"]["field"] == "inputs.0"
    assert [r["status"] for i, r in enumerate(records) if i != 3] == ["succeeded"] * 6


def test_streamed_tokens_of_batched_jobs_go_to_their_own_streams(client: httpx.Client) -> None:
    gpt2 = tiny(MODEL_ROOT, "gpt2")
    bodies = [{"kind": "inference", "model": gpt2, "inputs": [f"job {i} says"],
               "params": {"task": "text-generation", "max_new_tokens": 8, "stream": True}} for i in range(6)]
    for record in submit_all(client, bodies):
        events = client.get(f"/v1/jobs/{record['id']}/events").text
        texts = [json.loads(line[6:])["text"] for line in events.splitlines()
                 if line.startswith('data: {"index"')]
        assert "".join(texts) == record["result"][0]["generated_text"]


def test_watchdog_times_out_a_hung_job_and_the_worker_keeps_serving(client: httpx.Client,
                                                                     models: dict[str, str]) -> None:
    start = time.monotonic()
    hung = client.post("/v1/jobs", json={"kind": "synthetic", "model": "none", "params": {"fail": "hang"}},
                       headers={"Prefer": "wait=30"}).json()
    record = wait_status(client, hung["id"], timeout=60)
    assert record["status"] == "failed" and record["error"]["type"] == "timeout", record
    assert time.monotonic() - start < 30
    busy = client.post("/v1/jobs", json={"kind": "synthetic", "model": "none",
                                         "params": {"steps": 1, "step_ms": 10_000, "mode": "busy"}}).json()
    assert wait_status(client, busy["id"], timeout=60)["error"]["type"] == "timeout"
    ok = client.post("/v1/jobs", json=embed(models["minilm"], "still here"), headers={"Prefer": "wait=60"})
    assert ok.json()["status"] == "succeeded"


def test_batch_inference_reads_a_hub_dataset(client: httpx.Client, hub: HubServer) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": [f"review number {i}" for i in range(30)]}), buf)
    hub.seed_repo("alice/reviews", {"data/test-00000.parquet": buf.getvalue(), "README.md": b"# reviews"},
                  repo_type="dataset")
    sentiment = tiny(MODEL_ROOT, "bert-sentiment")
    job = client.post("/v1/jobs", json={"kind": "batch_inference", "model": sentiment,
                                        "params": {"data": {"dataset": "alice/reviews", "split": "test"},
                                                   "inference": {"task": "sentiment-analysis"}}},
                      headers={"Prefer": "wait=120"}).json()
    record = wait_status(client, job["id"])
    assert record["status"] == "succeeded", record
    table = pq.read_table(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/artifacts/outputs.parquet").content))
    assert table.num_rows == 30 and table.column("error").null_count == 30


def test_watchdog_times_out_every_job_of_a_hung_group(stack: MiniStack, client: httpx.Client) -> None:
    """A group message (bulk submits, worker/groups.py) is watched as a whole: each of its jobs times out."""
    from celery import Celery

    from gpuq.api.submission import prepare
    from gpuq.common.celery_config import GROUP_TASK_NAME, celery_config
    from gpuq.common.records import JobStore
    from gpuq.common.schemas import JobRequest
    from gpuq.common.settings import Settings

    settings = Settings(redis_url=stack.redis.url)
    hung = JobRequest(kind="synthetic", model="none", params={"fail": "hang"})
    jobs = [prepare(hung, "alpha", settings) for _ in range(2)]
    JobStore(stack.r()).create_many([(j.fields, None, "") for j in jobs])
    app = Celery("group-producer")
    app.conf.update(celery_config(settings))
    # The stack's 3 s limit, as the API there would set it (this process has the default settings).
    app.send_task(GROUP_TASK_NAME, args=[[j.fields["id"] for j in jobs]], queue="inference", soft_time_limit=3,
                  time_limit=6)
    records = [wait_status(client, j.fields["id"], timeout=60) for j in jobs]
    assert [(r["status"], r["error"]["type"]) for r in records] == [("failed", "timeout")] * 2, records
    ok = client.post("/v1/jobs", json={"kind": "synthetic", "model": "none", "params": {"steps": 1}},
                     headers={"Prefer": "wait=30"})
    assert ok.json()["status"] == "succeeded"
