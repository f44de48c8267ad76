"""Idempotency, cancellation and failure handling through real processes."""
from __future__ import annotations

import uuid

import httpx

from tests.support.jobs import run, sse_events, submit, wait_status


def test_same_idempotency_key_and_body_returns_same_job(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    body = {"kind": "synthetic", "model": "none", "params": {"steps": 1}}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"]


def test_same_idempotency_key_with_other_body_is_409(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    client.post("/v1/jobs", json={"kind": "synthetic", "model": "a", "params": {}}, headers={"Idempotency-Key": key})
    resp = client.post("/v1/jobs", json={"kind": "synthetic", "model": "b", "params": {}},
                       headers={"Idempotency-Key": key})
    assert resp.status_code == 409
    assert resp.json()["error"]["field"] == "Idempotency-Key"


def test_idempotency_keys_are_per_tenant(client: httpx.Client, client_b: httpx.Client) -> None:
    key = uuid.uuid4().hex
    body = {"kind": "synthetic", "model": "none", "params": {}}
    a = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key}).json()
    b = client_b.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert b.status_code == 202 and b.json()["id"] != a["id"]


def test_cancelled_queued_job_never_starts_and_running_job_stops(client: httpx.Client) -> None:
    blocker = submit(client, {"kind": "synthetic", "model": "none", "params": {"steps": 200, "step_ms": 50}})
    wait_status(client, blocker["id"], ("running",))
    queued = submit(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1}})
    cancelled = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    stop = client.post(f"/v1/jobs/{blocker['id']}/cancel")
    assert stop.status_code == 200 and stop.json()["cancel_requested"] is True
    stopped = wait_status(client, blocker["id"], timeout=30)
    assert stopped["status"] == "cancelled"
    assert stopped["progress"]["done"] < 200
    after = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1}})
    assert after["status"] == "succeeded"  # the queued message for the cancelled job was consumed by now
    final = client.get(f"/v1/jobs/{queued['id']}").json()
    assert final["status"] == "cancelled" and final["timings"]["started_at"] is None and final["attempts"] == 0
    assert [e["event"] for e in sse_events(client, queued["id"])] == ["queued", "cancelled"]
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 409


def test_failed_job_has_clear_error_and_worker_keeps_serving(client: httpx.Client, models: dict[str, str]) -> None:
    failed = run(client, {"kind": "synthetic", "model": "none", "params": {"fail": "error"}})
    assert failed["status"] == "failed"
    assert failed["error"] == {"type": "job_error", "message": "synthetic failure requested", "retryable": False,
                               "field": None}
    oom = run(client, {"kind": "synthetic", "model": "none", "params": {"fail": "oom"}})
    assert oom["error"]["type"] == "resource_exhausted"
    assert [e["event"] for e in sse_events(client, oom["id"])][-1] == "failed"
    ok = run(client, {"kind": "inference", "model": models["sentiment"], "inputs": "fine",
                      "params": {"task": "sentiment-analysis"}})
    assert ok["status"] == "succeeded"


def test_missing_hub_model_fails_cleanly_offline(client: httpx.Client) -> None:
    job = run(client, {"kind": "inference", "model": "no-such-org/no-such-model", "inputs": "x",
                       "params": {"task": "text-classification"}})
    assert job["status"] == "failed"
    assert job["error"]["message"]
    ok = run(client, {"kind": "synthetic", "model": "none", "params": {}})
    assert ok["status"] == "succeeded"


def test_record_carries_worker_and_timings(client: httpx.Client) -> None:
    job = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 2, "step_ms": 5}})
    assert job["worker"].startswith("main@")
    t = job["timings"]
    assert t["submitted_at"] <= t["started_at"] <= t["finished_at"]
    assert t["queue_wait_ms"] >= 0 and t["run_ms"] >= 10 and t["model_load_ms"] == 0
