"""A private stack per fault test (its own Redis, workers and API), so faults never leak into other tests,
and an outcome table (fault, expected, observed) written to tests/faults/README.md from the run."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from gpuq.common.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import KEY_A, KEY_B
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive

README = Path(__file__).parent / "README.md"
_OUTCOMES: dict[str, tuple[str, str, str]] = {}


class Stack:
    """Redis + workers + API started for one test, with helpers to hurt them."""

    def __init__(self, base_env: dict[str, str], **settings: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gpuq-fault-"))
        self.redis_port = free_port()
        self.redis: EmbeddedRedis | None = None
        self.env = {**base_env, **settings}
        self.env.update({"GPUQ_ARTIFACT_DIR": str(self.dir / "artifacts"), "GPUQ_DATA_DIR": str(self.dir)})
        self.workers: dict[str, Service] = {}
        self.api: Service | None = None
        self.url = ""

    def start_redis(self, *extra: str) -> str:
        self.redis = EmbeddedRedis(self.dir / "redis", port=self.redis_port, extra=list(extra)).start()
        self.env["GPUQ_REDIS_URL"] = self.redis.url
        return self.redis.url

    def kill_redis(self) -> None:
        assert self.redis and self.redis.proc
        self.redis.proc.kill()
        self.redis.proc.wait()

    @property
    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["GPUQ_REDIS_URL"], decode_responses=True)

    def celery_app(self) -> Any:
        """A producer Celery app pointed at this stack's Redis."""
        from celery import Celery

        from gpuq.common.celery_config import celery_config
        from gpuq.common.settings import Settings

        app = Celery("fault-producer")
        app.conf.update(celery_config(Settings(redis_url=self.env["GPUQ_REDIS_URL"])))
        return app

    def start_worker(self, name: str, **env: str) -> Service:
        svc = start_worker({**self.env, **env}, self.dir, name)
        wait_for(lambda: worker_alive(self.env["GPUQ_REDIS_URL"], f"{name}@"), 90, f"worker {name}")
        self.workers[name] = svc
        return svc

    def start_api(self) -> str:
        self.api, self.url = start_api(self.env, self.dir)
        return self.url

    def client(self, key: str = KEY_A) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def pool_children(self, name: str) -> list[psutil.Process]:
        """The worker's prefork pool children (the processes that run jobs)."""
        return psutil.Process(self.workers[name].pid).children()

    def stop(self) -> None:
        for svc in [*self.workers.values(), *([self.api] if self.api else [])]:
            svc.stop(timeout=20)
        if self.redis:
            self.redis.stop()


@pytest.fixture()
def stack(service_env: dict[str, str]) -> Iterator[Stack]:
    """A private stack; each test starts the parts it needs."""
    base = {k: v for k, v in service_env.items() if k != "GPUQ_REDIS_URL"}
    s = Stack(base, GPUQ_LEASE_TTL_S="3", GPUQ_SWEEP_INTERVAL_S="1", GPUQ_WORKER_HEARTBEAT_S="1",
              GPUQ_WORKER_SOFT_SHUTDOWN_S="20")
    yield s
    s.stop()
    if not os.environ.get("GPUQ_KEEP_FAULT_DIRS"):
        shutil.rmtree(s.dir, ignore_errors=True)


class Outcome:
    """What a fault test expected and what it observed, for the README table."""

    def __init__(self, node: str) -> None:
        self.node = node

    def record(self, fault: str, expected: str, observed: str) -> None:
        _OUTCOMES[self.node] = (fault, expected, observed)


@pytest.fixture()
def outcome(request: pytest.FixtureRequest) -> Outcome:
    return Outcome(request.node.name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    rep = yield
    report = rep.get_result()
    if report.when == "call" and item.name in _OUTCOMES:
        fault, expected, observed = _OUTCOMES[item.name]
        status = "pass" if report.passed else "FAIL"
        _OUTCOMES[item.name] = (fault, expected, f"{observed} ({status})")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if not _OUTCOMES or os.environ.get("GPUQ_FAULTS_README", "1") != "1":
        return
    # A partial run updates its own rows and keeps the others from the last run.
    rows = _readme_rows()
    rows.update({fault: f"| {fault} | {e} | {o} |" for fault, e, o in _OUTCOMES.values()})
    README.write_text(_HEADER + "\n".join(rows[k] for k in sorted(rows)) + "\n\n_Updated by the fault tests on "
                      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
                      "(`python -m pytest tests/faults`)._\n")


def _readme_rows() -> dict[str, str]:
    """The table rows of the current README, by fault."""
    if not README.exists():
        return {}
    lines = README.read_text().splitlines()
    body = [ln for ln in lines if ln.startswith("| ") and not ln.startswith(("| fault |", "|---"))]
    return {ln[2:].split(" | ", 1)[0]: ln for ln in body}


_HEADER = """# Fault drills

Each row is a test in this folder that injects the fault for real (signals to worker processes, killing
Redis, filling its memory, hostile HTTP) against real processes, and what it observed.

| fault | expected | observed |
|---|---|---|
"""


def wait_job(client: httpx.Client, job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
             timeout: float = 120) -> dict[str, Any]:
    """Poll a job until it reaches one of ``statuses`` (tolerating a restarting API or Redis)."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            resp = client.get(f"/v1/jobs/{job_id}")
            if resp.status_code == 200:
                job = resp.json()
                if job["status"] in statuses:
                    return job
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stuck: {job}")


__all__ = ["KEY_A", "KEY_B", "Stack", "wait_job"]
