"""Server-Sent Events: replay from the start, resume from Last-Event-ID, end after the terminal event."""
from __future__ import annotations

import httpx

from tests.support.jobs import run, sse_events


def test_events_replay_whole_lifecycle_in_order(client: httpx.Client, models: dict[str, str]) -> None:
    job = run(client, {"kind": "inference", "model": models["minilm"], "inputs": [f"t{i}" for i in range(6)],
                       "params": {"task": "feature-extraction", "batch_size": 2}})
    events = sse_events(client, job["id"])
    types = [e["event"] for e in events]
    assert types[0] == "queued" and types[1] == "started" and types[-1] == "completed"
    progress = [e["data"]["done"] for e in events if e["event"] == "progress"]
    assert progress == [2, 4, 6]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_last_event_id_resumes_after_that_event(client: httpx.Client, models: dict[str, str]) -> None:
    job = run(client, {"kind": "synthetic", "model": "none", "inputs": None, "params": {"steps": 4}})
    full = sse_events(client, job["id"])
    resumed = sse_events(client, job["id"], last_event_id=full[2]["id"])
    assert resumed == full[3:]


def test_stream_of_running_job_follows_live_until_terminal(client: httpx.Client) -> None:
    resp = client.post("/v1/jobs", json={"kind": "synthetic", "model": "none",
                                         "params": {"steps": 5, "step_ms": 100}})
    events = sse_events(client, resp.json()["id"])
    assert [e["event"] for e in events][-1] == "completed"
    assert [e["data"]["done"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4, 5]


def test_stream_survives_a_quiet_spell_longer_than_the_redis_read_timeout(client: httpx.Client) -> None:
    # One 6 s step: no event for longer than redis-py's default 5 s socket timeout.
    resp = client.post("/v1/jobs", json={"kind": "synthetic", "model": "none",
                                         "params": {"steps": 1, "step_ms": 6000}})
    events = sse_events(client, resp.json()["id"])
    assert [e["event"] for e in events][-1] == "completed"
