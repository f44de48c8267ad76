"""The worker's own /metrics, /healthz and /livez (parent process), fed by the pool child through Redis."""
from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from gpuq.common.embedded_redis import free_port
from tests.faults.conftest import Stack
from tests.support.jobs import run
from tests.support.processes import wait_for
from tests.support.prom import scrape, value


@pytest.fixture()
def stack(service_env: dict[str, str]) -> Iterator[Stack]:
    """A private Redis + worker + API, so the numbers are this test's alone."""
    base = {k: v for k, v in service_env.items() if k != "GPUQ_REDIS_URL"}
    s = Stack(base, GPUQ_WORKER_HEARTBEAT_S="0.5", GPUQ_WORKER_TTL_S="3", GPUQ_WORKER_SOFT_SHUTDOWN_S="1",
              GPUQ_WORKER_METRICS_HOST="127.0.0.1")
    yield s
    s.stop()
    shutil.rmtree(s.dir, ignore_errors=True)


def _health(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5)


def test_worker_metrics_report_runs_batches_cache_memory_and_preload(stack: Stack,
                                                                     models: dict[str, str]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack.start_redis()
    stack.start_worker("wm", GPUQ_WORKER_METRICS_PORT=str(port),
                       GPUQ_PRELOAD=f"text-classification={models['sentiment']}")
    stack.start_api()
    wait_for(lambda: _health(f"{base}/healthz").status_code == 200, 120, "worker /healthz after preload")
    assert _health(f"{base}/healthz").json()["preload"] == "done"
    before = scrape(f"{base}/metrics")
    assert value(before, "gpuq_worker_preload_done") == 1
    assert value(before, "gpuq_worker_model_cache_misses_total") == 1  # the preload itself
    assert value(before, "gpuq_worker_model_load_seconds_total") > 0

    with stack.client() as c:
        job = run(c, {"kind": "inference", "model": models["sentiment"], "inputs": ["good", "bad", "fine"],
                      "params": {"task": "text-classification", "batch_size": 2}})
    assert job["status"] == "succeeded" and job["timings"]["model_load_ms"] == 0  # preloaded: a cache hit

    after = scrape(f"{base}/metrics")
    assert value(after, "gpuq_worker_jobs_total", kind="inference", status="succeeded") == 1
    assert value(after, "gpuq_worker_job_run_seconds_count", kind="inference") == 1
    assert value(after, "gpuq_worker_job_run_seconds_sum", kind="inference") > 0
    assert value(after, "gpuq_worker_batch_size_count") == 2
    assert value(after, "gpuq_worker_batch_size_sum") == 3
    assert value(after, "gpuq_worker_batch_size_bucket", le="1") == 1
    assert value(after, "gpuq_worker_model_cache_hits_total") == 1
    assert value(after, "gpuq_worker_model_cache_misses_total") == 1
    assert value(after, "gpuq_worker_resident_models") == 1
    assert value(after, "gpuq_worker_device_memory_used_bytes", device="cpu") > 0
    assert value(after, "gpuq_worker_device_memory_budget_bytes", device="cpu") >= value(
        after, "gpuq_worker_device_memory_used_bytes", device="cpu")
    node = next(k[1][0][1] for k in after if k[0] == "gpuq_worker_heartbeat_timestamp_seconds")
    assert node.startswith("wm@") and value(after, "gpuq_worker_redis_up") == 1


def test_healthz_fails_without_redis_while_livez_stays_up(stack: Stack) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack.start_redis()
    stack.start_worker("wl", GPUQ_WORKER_METRICS_PORT=str(port))
    wait_for(lambda: _health(f"{base}/healthz").status_code == 200, 30, "worker /healthz")
    stack.kill_redis()
    wait_for(lambda: _health(f"{base}/healthz").status_code == 503, 30, "/healthz to notice Redis is gone")
    assert "no heartbeat" in _health(f"{base}/healthz").json()["problems"][0]
    assert _health(f"{base}/livez").status_code == 200  # a Redis outage must not restart GPU workers
    assert value(scrape(f"{base}/metrics"), "gpuq_worker_redis_up") == 0  # the scrape still answers
    stack.start_redis()  # same port: the worker reconnects and turns healthy again
    wait_for(lambda: _health(f"{base}/healthz").status_code == 200, 60, "/healthz after Redis returns")


def test_failed_preload_keeps_the_worker_unhealthy(stack: Stack) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack.start_redis()
    stack.start_worker("wp", GPUQ_WORKER_METRICS_PORT=str(port), GPUQ_PRELOAD="/nonexistent/model")
    wait_for(lambda: "failed" in str(_health(f"{base}/healthz").json().get("preload")), 60, "preload to fail")
    resp = _health(f"{base}/healthz")
    assert resp.status_code == 503 and "GPUQ_MODEL_ROOTS" in resp.json()["preload"]
    assert _health(f"{base}/livez").status_code == 200
    assert _health(f"{base}/nope").status_code == 404


def test_a_group_s_jobs_are_counted_with_their_outcomes(stack: Stack, models: dict[str, str]) -> None:
    """A bulk submit's jobs travel as one group message; each is counted once, by the outcome written for it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack.start_redis()
    stack.start_worker("wg", GPUQ_WORKER_METRICS_PORT=str(port))
    stack.start_api()
    wait_for(lambda: _health(f"{base}/healthz").status_code == 200, 60, "worker /healthz")
    job = {"kind": "inference", "model": models["sentiment"], "inputs": ["good"],
           "params": {"task": "text-classification"}}
    with stack.client() as c:
        done = c.post("/v1/jobs/batch", json={"jobs": [job] * 3}, headers={"Prefer": "wait=120"}).json()["jobs"]
    assert [j["status"] for j in done] == ["succeeded"] * 3
    assert [(j["batch"] or {}).get("group") for j in done] == [3] * 3  # one group of three
    after = scrape(f"{base}/metrics")
    assert value(after, "gpuq_worker_jobs_total", kind="inference", status="succeeded") == 3
    assert value(after, "gpuq_worker_job_run_seconds_count", kind="inference") == 3
