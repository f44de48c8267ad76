"""Bulk submits end to end: one request, many jobs, group messages run together on a real threads-pool worker.

Each job keeps its own record, events, result and failure; an Idempotency-Key replays the whole request;
jobs of a group that are no longer fresh (cancelled, or left running by a worker that died) take the
single-job runner's path.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuq.common import keys
from tests.conftest import KEY_A, MODEL_ROOT
from tests.support.jobs import wait_status
from tests.support.models import tiny
from tests.support.stack import MiniStack, client_fixture, worker_env


@pytest.fixture(scope="module")
def stack(log_dir: Path, models: dict[str, str]) -> Iterator[MiniStack]:
    # Two executors (the CPU worker setting): groups' passes are shared between them and run side by side.
    with MiniStack({**worker_env(), "GPUQ_TORCH_THREADS": "1", "GPUQ_GROUP_MAX_JOBS": "8",
                       "GPUQ_BATCH_EXECUTORS": "2"}, log_dir, "bulk") as s:
        s.worker("bk", concurrency=8)
        yield s


client = client_fixture(KEY_A)


def embed(model: str, text: str) -> dict[str, Any]:
    return {"kind": "inference", "model": model, "inputs": text, "params": {"task": "feature-extraction"}}


def bulk(client: httpx.Client, bodies: list[dict[str, Any]], **headers: str) -> httpx.Response:
    return client.post("/v1/jobs/batch", json={"jobs": bodies}, headers={"Prefer": "wait=120", **headers})


def event_types(client: httpx.Client, job_id: str) -> list[str]:
    text = client.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"}).text
    return [line[7:] for line in text.splitlines() if line.startswith("event: ")]


def test_bulk_jobs_run_in_groups_with_their_own_records_events_and_results(client: httpx.Client,
                                                                          models: dict[str, str]) -> None:
    texts = [f"bulk sentence {i} about {'cats' if i % 2 else 'queues'}" for i in range(20)]
    alone = [client.post("/v1/jobs", json=embed(models["minilm"], t), headers={"Prefer": "wait=60"}).json()
             for t in texts[:3]]
    resp = bulk(client, [embed(models["minilm"], t) for t in texts])
    assert resp.status_code == 200, resp.text
    assert resp.headers["Preference-Applied"] == "wait=60"  # capped by GPUQ_SYNC_WAIT_MAX_S
    records = resp.json()["jobs"]
    assert [r["status"] for r in records] == ["succeeded"] * 20
    assert len({r["id"] for r in records}) == 20
    assert max(r["batch"]["jobs"] for r in records) > 1  # a group shares forward passes
    for a, b in zip(alone, records):
        assert all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a["result"], b["result"]))
    for r in records:
        assert event_types(client, r["id"]) == ["queued", "started", "completed"]
        assert r["attempts"] == 1 and r["timings"]["run_ms"] > 0 and r["timings"]["queue_wait_ms"] >= 0
        assert client.get(f"/v1/jobs/{r['id']}").json()["status"] == "succeeded"


def test_mixed_kinds_and_a_bad_input_fail_only_their_own_job(client: httpx.Client) -> None:
    gpt2 = tiny(MODEL_ROOT, "gpt2")
    params = {"task": "text-generation", "max_new_tokens": 3}
    good = [{"kind": "inference", "model": gpt2, "inputs": f"the worker {i}", "params": params} for i in range(5)]
    bad = {"kind": "inference", "model": gpt2, "inputs": "queue " * 1500, "params": params}  # > 1024 positions
    synthetic = {"kind": "synthetic", "model": "none", "params": {"steps": 2, "step_ms": 1}}
    resp = bulk(client, good[:2] + [bad, synthetic] + good[2:])
    assert resp.status_code == 200, resp.text
    records = resp.json()["jobs"]
    assert records[2]["status"] == "failed" and records[2]["error"]["type"] == "invalid_input", records[2]
    assert [r["status"] for i, r in enumerate(records) if i != 2] == ["succeeded"] * 6
    assert event_types(client, records[2]["id"])[-1] == "failed"


def test_idempotency_key_replays_the_whole_request(client: httpx.Client, models: dict[str, str]) -> None:
    bodies = [embed(models["minilm"], f"idempotent {i}") for i in range(3)]
    first = bulk(client, bodies, **{"Idempotency-Key": "bulk-key-1"})
    again = bulk(client, bodies, **{"Idempotency-Key": "bulk-key-1"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert [r["id"] for r in again.json()["jobs"]] == [r["id"] for r in first.json()["jobs"]]
    changed = bulk(client, bodies[:2] + [embed(models["minilm"], "another")], **{"Idempotency-Key": "bulk-key-1"})
    assert changed.status_code == 409 and "jobs.2" in changed.json()["error"]["message"]
    # A longer request under the same key: the first three replay, the fourth is new.
    longer = bulk(client, bodies + [embed(models["minilm"], "fourth")], **{"Idempotency-Key": "bulk-key-1"})
    assert longer.status_code == 200 and "Idempotent-Replayed" not in longer.headers
    assert [r["id"] for r in longer.json()["jobs"]][:3] == [r["id"] for r in first.json()["jobs"]]


def test_jobs_that_are_not_fresh_take_the_single_job_path(log_dir: Path, models: dict[str, str]) -> None:
    """A cancelled job stays cancelled; a job left running by a dead worker is redone (attempt 2), once."""
    with (MiniStack({**worker_env(), "GPUQ_TORCH_THREADS": "1"}, log_dir, "bulk-redelivery") as s,
          s.client(KEY_A) as client):
        bodies = [embed(models["minilm"], f"queued before any worker {i}") for i in range(4)]
        resp = client.post("/v1/jobs/batch", json={"jobs": bodies})
        assert resp.status_code == 202, resp.text
        ids = [r["id"] for r in resp.json()["jobs"]]
        assert client.post(f"/v1/jobs/{ids[0]}/cancel").json()["status"] == "cancelled"
        # As a worker that claimed job 1 and died would leave it: running, attempt 1, lease expired.
        r = s.r()
        r.hset(keys.job(ids[1]), mapping={"status": "running", "attempts": 1, "worker": "gone@host:1"})
        s.worker("late", concurrency=4)
        records = [wait_status(client, job_id) for job_id in ids]
        assert [x["status"] for x in records] == ["cancelled", "succeeded", "succeeded", "succeeded"]
        assert records[1]["attempts"] == 2 and [x["attempts"] for x in records[2:]] == [1, 1]
        assert event_types(client, ids[0]) == ["queued", "cancelled"]
        assert event_types(client, ids[1]).count("completed") == 1
        started = [json.loads(e)["attempt"] for e in _event_data(client, ids[1], "started")]
        assert started == [2]


def _event_data(client: httpx.Client, job_id: str, kind: str) -> list[str]:
    text = client.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"}).text
    frames = [f for f in text.split("\n\n") if f"event: {kind}" in f]
    return [line[6:] for f in frames for line in f.splitlines() if line.startswith("data: ")]


def test_concurrent_single_submits_are_coalesced_into_groups(client: httpx.Client, models: dict[str, str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    lone = client.post("/v1/jobs", json=embed(models["minilm"], "alone"), headers={"Prefer": "wait=60"}).json()
    assert lone["status"] == "succeeded" and lone["batch"]["group"] == 1

    def one(i: int) -> dict[str, Any]:
        resp = client.post("/v1/jobs", json=embed(models["minilm"], f"together {i}"), headers={"Prefer": "wait=60"})
        return wait_status(client, resp.json()["id"])
    with ThreadPoolExecutor(24) as pool:
        records = list(pool.map(one, range(24)))
    assert [r["status"] for r in records] == ["succeeded"] * 24
    assert max(r["batch"]["group"] for r in records) > 1  # one message carried several jobs
    for r in records:
        assert event_types(client, r["id"]) == ["queued", "started", "completed"]


def test_a_key_naming_an_expired_job_is_409_and_stores_nothing(client: httpx.Client, stack: MiniStack,
                                                               models: dict[str, str]) -> None:
    bodies = [embed(models["minilm"], f"expiring {i}") for i in range(2)]
    first = bulk(client, bodies, **{"Idempotency-Key": "bulk-expiring"}).json()["jobs"]
    stack.r().delete(keys.job(first[1]["id"]))  # as the record TTL would
    before = len(client.get("/v1/jobs", params={"limit": 500}).json()["jobs"])
    again = bulk(client, bodies + [embed(models["minilm"], "new")], **{"Idempotency-Key": "bulk-expiring"})
    assert again.status_code == 409 and "jobs.1" in again.json()["error"]["message"], again.text
    assert len(client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]) == before
