"""API metrics and the admin queue-load route, against the real stack (counters live in Redis)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import KEY_A
from tests.support.jobs import run, submit, wait_status
from tests.support.processes import Service, start_api, wait_for
from tests.support.prom import scrape, value

SLOW = {"kind": "synthetic", "model": "none", "params": {"steps": 40, "step_ms": 100}}


@pytest.mark.parametrize("headers, status", [({}, 401), ({"Authorization": "Bearer nope"}, 401),
                                             ({"Authorization": f"Bearer {KEY_A}"}, 403)])
def test_admin_queues_needs_an_admin_key(anon: httpx.Client, headers: dict[str, str], status: int) -> None:
    resp = anon.get("/v1/admin/queues", headers=headers)
    assert resp.status_code == status
    assert resp.json()["error"]["field"] == "Authorization"


def test_queue_load_counts_waiting_and_running_jobs(client: httpx.Client, admin: httpx.Client,
                                                    api_url: str) -> None:
    running = submit(client, SLOW)
    wait_status(client, running["id"], ("running",))
    waiting = [submit(client, SLOW) for _ in range(2)]
    try:
        inference = admin.get("/v1/admin/queues").json()["queues"]["inference"]
        assert inference["running"] >= 1 and inference["waiting"] >= 2
        assert inference["load"] == inference["waiting"] + inference["running"]
        assert inference["oldest_wait_s"] > 0  # the head of the list is a job submitted just now
        samples = scrape(f"{api_url}/metrics")
        assert value(samples, "gpuq_queue_load", queue="inference") >= 3
        assert value(samples, "gpuq_queue_running", queue="inference") >= 1
        assert value(samples, "gpuq_queue_waiting", queue="inference") >= 2
    finally:
        for job in [running, *waiting]:
            client.post(f"/v1/jobs/{job['id']}/cancel")
    for job in [running, *waiting]:
        assert wait_status(client, job["id"])["status"] == "cancelled"
    wait_for(lambda: admin.get("/v1/admin/queues").json()["queues"]["inference"]["load"] == 0, 30,
             "inference queue to drain")


def test_metrics_count_jobs_by_kind_status_and_error(client: httpx.Client, api_url: str) -> None:
    before = scrape(f"{api_url}/metrics")
    ok = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1}})
    bad = run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1, "fail": "oom"}})
    assert (ok["status"], bad["status"]) == ("succeeded", "failed")
    after = scrape(f"{api_url}/metrics")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gpuq_jobs_submitted_total", kind="synthetic") == 2
    assert delta("gpuq_jobs_finished_total", kind="synthetic", status="succeeded") == 1
    assert delta("gpuq_jobs_finished_total", kind="synthetic", status="failed") == 1
    assert delta("gpuq_jobs_failed_total", kind="synthetic", error="resource_exhausted") == 1
    assert delta("gpuq_queue_wait_seconds_count", queue="inference") == 2
    assert value(after, "gpuq_redis_up") == 1 and value(after, "gpuq_workers_alive") >= 1
    assert value(after, "gpuq_queue_wait_seconds_bucket", queue="inference", le="+Inf") == value(
        after, "gpuq_queue_wait_seconds_count", queue="inference")


@pytest.fixture()
def second_api(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    svc: Service
    svc, url = start_api(service_env, log_dir)
    yield url
    svc.stop()


def test_every_api_replica_reports_the_same_counters(client: httpx.Client, api_url: str,
                                                     second_api: str) -> None:
    run(client, {"kind": "synthetic", "model": "none", "params": {"steps": 1}})
    first, second = scrape(f"{api_url}/metrics"), scrape(f"{second_api}/metrics")
    for name, labels in [("gpuq_jobs_submitted_total", {"kind": "synthetic"}),
                         ("gpuq_jobs_finished_total", {"kind": "synthetic", "status": "succeeded"})]:
        assert value(first, name, **labels) == value(second, name, **labels) > 0
