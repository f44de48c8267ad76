"""Priorities: a worker picks its next job by priority (high, normal, low), not by arrival order."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import KEY_A
from tests.support.jobs import submit, wait_status
from tests.support.processes import start_api, start_worker, wait_for, worker_alive

RANK = {"high": 0, "normal": 1, "low": 2}


@pytest.fixture(scope="module")
def private_stack(service_env: dict[str, str], log_dir: Path, redis_url: str) -> Iterator[httpx.Client]:
    """Its own worker and API on another Redis database, so no other test's jobs interleave."""
    url = redis_url.rsplit("/", 1)[0] + "/5"
    env = {**service_env, "GPUQ_REDIS_URL": url}
    worker = start_worker(env, log_dir, "prio")
    api, api_url = start_api(env, log_dir)
    try:
        wait_for(lambda: worker_alive(url, "prio@"), 90, "priority worker heartbeat")
        with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as c:
            yield c
    finally:
        api.stop()
        worker.stop()


def test_queued_jobs_start_in_priority_order(private_stack: httpx.Client) -> None:
    client = private_stack
    blocker = submit(client, {"kind": "synthetic", "model": "blocker", "params": {"steps": 1, "step_ms": 3000}})
    wait_status(client, blocker["id"], ("running",))
    # Arrival order is the reverse of priority order, so FIFO and priority order disagree everywhere.
    order = ["low"] * 3 + ["normal"] * 3 + ["high"] * 3
    jobs = [submit(client, {"kind": "synthetic", "model": f"{p}-{i}", "priority": p, "params": {"steps": 0}})
            for i, p in enumerate(order)]
    done = [wait_status(client, j["id"]) for j in jobs]
    assert all(d["status"] == "succeeded" for d in done)
    started = [d["priority"] for d in sorted(done, key=lambda d: d["timings"]["started_at"])]
    # With prefetch 1 the worker may already hold the first message that arrived (a low one) while the
    # blocker runs; every other job must start in priority order.
    if started[0] == "low" and started[1] == "high":
        started = started[1:]
    assert started == sorted(started, key=RANK.__getitem__), started
    assert started[:3] == ["high"] * 3
