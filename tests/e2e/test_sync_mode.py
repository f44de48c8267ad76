"""Synchronous mode: ``Prefer: wait=N`` on submit and ``?wait=N`` long-polls, answered from the event stream."""
from __future__ import annotations

import time

import httpx

from tests.support.jobs import submit, wait_status


def _slow(steps: int, step_ms: int = 100) -> dict[str, object]:
    return {"kind": "synthetic", "model": "none", "params": {"steps": steps, "step_ms": step_ms}}


def test_prefer_wait_answers_with_the_finished_job(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", json=_slow(3, 50), headers={"Prefer": "wait=30"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["Preference-Applied"] == "wait=30"
    assert resp.json()["status"] == "succeeded" and resp.json()["result"]["steps"] == 3
    assert resp.headers["Location"] == f"/v1/jobs/{resp.json()['id']}"


def test_prefer_wait_that_runs_out_answers_202_with_the_live_job(client: httpx.Client) -> None:
    started = time.monotonic()
    resp = client.post("/v1/jobs", json=_slow(40), headers={"Prefer": "respond-async, wait=0.5"})
    elapsed = time.monotonic() - started
    assert resp.status_code == 202 and resp.headers["Preference-Applied"] == "wait=0.5"
    assert resp.json()["status"] in ("queued", "running")
    assert 0.5 <= elapsed < 10
    client.post(f"/v1/jobs/{resp.json()['id']}/cancel")
    assert wait_status(client, resp.json()["id"])["status"] == "cancelled"


def test_prefer_wait_is_capped_by_the_server_setting(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", json=_slow(1, 0), headers={"Prefer": "wait=86400"})
    assert resp.status_code == 200 and resp.headers["Preference-Applied"] == "wait=60"


def test_unparseable_prefer_is_ignored_like_rfc_7240_says(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", json=_slow(1, 0), headers={"Prefer": "wait=soon"})
    assert resp.status_code == 202 and "Preference-Applied" not in resp.headers


def test_long_poll_returns_as_soon_as_the_job_finishes(client: httpx.Client) -> None:
    job = submit(client, _slow(10))
    started = time.monotonic()
    got = client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()
    elapsed = time.monotonic() - started
    assert got["status"] == "succeeded"
    assert elapsed < 15  # woken by the terminal event, not by the 30 s deadline
    again = time.monotonic()
    assert client.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()["status"] == "succeeded"
    assert time.monotonic() - again < 2  # a finished job answers at once


def test_long_poll_deadline_returns_the_running_job(client: httpx.Client) -> None:
    job = submit(client, _slow(40))
    started = time.monotonic()
    got = client.get(f"/v1/jobs/{job['id']}", params={"wait": 0.5}).json()
    assert got["status"] in ("queued", "running") and time.monotonic() - started >= 0.5
    client.post(f"/v1/jobs/{job['id']}/cancel")
    wait_status(client, job["id"])


def test_idempotent_replay_also_waits(client: httpx.Client) -> None:
    body, key = _slow(5, 50), f"sync-{time.time_ns()}"
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key, "Prefer": "wait=30"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "succeeded"


def test_negative_wait_query_is_422(client: httpx.Client) -> None:
    job = submit(client, _slow(1, 0))
    resp = client.get(f"/v1/jobs/{job['id']}", params={"wait": -1})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "query.wait"
