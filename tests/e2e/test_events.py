"""Server-Sent Events: replay from the start, resume from Last-Event-ID, end after the terminal event."""
from __future__ import annotations

import httpx
import pytest

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


def _stream(client: httpx.Client, job_id: str, timeout: float = 10, **headers: str) -> httpx.Response:
    """One events request read to its end (it must end well within ``timeout``)."""
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as resp:
        resp.read()
        return resp


def test_a_resume_at_or_after_the_terminal_event_closes_at_once(client: httpx.Client) -> None:
    job = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 2}})
    full = sse_events(client, job["id"])
    terminal = full[-1]["id"]
    resp = _stream(client, job["id"], timeout=5, **{"Last-Event-ID": terminal})
    assert resp.status_code == 200 and "event:" not in resp.text
    ms, seq = terminal.split("-")
    later = client.get(f"/v1/jobs/{job['id']}/events", params={"after": f"{ms}-{int(seq) + 1}", "follow": "false"})
    assert later.status_code == 422 and later.json()["error"]["field"] == "after"


@pytest.mark.parametrize("bad", ["99999999999999999999999-0", "1-99999999999999999999999", "18446744073709551616-0",
                                 "abc", "1-", "-1", "١٢٣-0", "1700000000000-0-0", "9999999999999-0"])
def test_malformed_or_out_of_range_ids_are_422_before_any_streaming(client: httpx.Client, bad: str) -> None:
    job = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1}})
    resp = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": bad.encode()}, timeout=10)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "Last-Event-ID"
    query = client.get(f"/v1/jobs/{job['id']}/events", params={"after": bad}, timeout=10)
    assert query.status_code == 422 and query.json()["error"]["field"] == "after", query.text
