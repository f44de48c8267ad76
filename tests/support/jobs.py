"""Helpers for driving jobs through the real API in tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


def submit(client: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    """POST a job and return the record (asserting 202)."""
    resp = client.post("/v1/jobs", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()  # type: ignore[no-any-return]


def wait_status(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 120
) -> dict[str, Any]:
    """Poll a job until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck in {job.get('status')}: {job}")


def run(client: httpx.Client, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Submit and wait for a terminal status."""
    return wait_status(client, submit(client, body)["id"], timeout=timeout)


def sse_events(
    client: httpx.Client, job_id: str, last_event_id: str | None = None, timeout: float = 120
) -> list[dict[str, Any]]:
    """Read a job's SSE stream to its end; each event as {id, event, data}."""
    import json

    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line:
                if "event" in current:
                    out.append(current)
                current = {}
            elif line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
    return out
