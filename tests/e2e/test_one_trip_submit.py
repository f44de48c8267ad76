"""Single submits in one round trip (api/intake.py, common/submit_script.py), end to end over HTTP: a stock
Celery worker runs the messages the API pushed, ``celery inspect`` reports them, and concurrent idempotent
replays and quota races leave exactly the jobs and messages they should. No gpuq worker runs here, so what
the API stored stays in Redis to be counted."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from gpuq.common.celery_config import queue_lists
from gpuq.common.embedded_redis import free_port
from tests.conftest import KEY_A
from tests.support.processes import ROOT, Service, wait_for
from tests.support.stack import MiniStack, worker_env
from tests.support.stock_celery import HOLD, RECEIVED


@pytest.fixture()
def stack(log_dir: Path, models: dict[str, str]) -> Iterator[MiniStack]:
    # A long coalescing window, so concurrent submits surely share group messages.
    with MiniStack(worker_env(), log_dir, f"one-trip-{uuid.uuid4().hex[:6]}", GPUQ_SUBMIT_COALESCE_MS="300",
                   GPUQ_TENANT_QUOTAS=json.dumps({"beta": {"max_in_flight": 5}})) as s:
        yield s


def _embed(models: dict[str, str], text: str, priority: str = "normal") -> dict[str, Any]:
    return {"kind": "inference", "model": models["minilm"], "inputs": text, "priority": priority,
            "params": {"task": "feature-extraction"}}


def _together(stack: MiniStack, bodies: list[dict[str, Any]], keys: list[str | None] | None = None,
              key: str = KEY_A, url: str | None = None) -> list[httpx.Response]:
    keys = keys or [None] * len(bodies)
    with httpx.Client(base_url=url or stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client, \
            ThreadPoolExecutor(len(bodies)) as pool:
        def one(i: int) -> httpx.Response:
            headers = {"Idempotency-Key": keys[i]} if keys[i] else {}
            return client.post("/v1/jobs", json=bodies[i], headers=headers)
        return list(pool.map(one, range(len(bodies))))


def _queued_ids(stack: MiniStack) -> list[str]:
    """Every job id the messages waiting on the inference queue's lists carry."""
    out: list[str] = []
    for name in queue_lists("inference"):
        for raw in stack.r().lrange(name, 0, -1):
            args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
            out += args[0] if isinstance(args[0], list) else [args[0]]
    return out


class StockWorker:
    """``celery worker`` on tests/support/stock_celery.py, consuming the shared inference queue."""

    def __init__(self, stack: MiniStack) -> None:
        self.env = {**os.environ, "STOCK_BROKER_URL": stack.redis.url}
        self.log = (stack.log_dir / "stock.log").open("ab")
        self.proc = subprocess.Popen(self._celery("worker", "-P", "threads", "-c", "1", "-Q", "inference", "--without-gossip",
                                                  "--without-mingle", "-l", "WARNING", "-n", "stock@%h"),
                                     env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @staticmethod
    def _celery(*args: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "tests.support.stock_celery", *args]

    def inspect(self, what: str) -> dict[str, Any]:
        out = subprocess.run(self._celery("inspect", what, "--json", "--timeout", "5"), env=self.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def test_a_stock_celery_worker_runs_the_messages_the_api_pushed(stack: MiniStack, models: dict[str, str]) -> None:
    r = stack.r()
    with stack.client(KEY_A) as client:
        single = {p: client.post("/v1/jobs", json={"kind": "synthetic", "model": p, "priority": p,
                                                   "params": {"steps": 0}}).json()["id"]
                  for p in ("low", "normal", "high")}
    # Low priority, after the low single job: the stock worker takes the singles first, high to low.
    grouped = [resp.json()["id"] for resp in _together(stack, [_embed(models, f"t {i}", "low") for i in range(8)])]
    worker = StockWorker(stack)
    try:
        wait_for(lambda: {i for m in map(json.loads, r.lrange(RECEIVED, 0, -1)) for i in _ids(m)}
                 >= {*single.values(), *grouped}, 60, "the stock worker ran every job")
        received = [json.loads(m) for m in r.lrange(RECEIVED, 0, -1)]
        assert [m["args"][0] for m in received[:3]] == [single["high"], single["normal"], single["low"]]
        for m in received[:3]:  # a priority list each, consumed high first; gpuq's headers intact
            assert m["task"] == "gpuq.run_job" and m["id"] == m["args"][0] and m["timelimit"] == [3630, 3600]
        groups = [m for m in received if m["task"] == "gpuq.run_group"]
        assert groups and max(len(m["args"][0]) for m in groups) > 1
        assert Counter(i for m in received[3:] for i in _ids(m)) == Counter(grouped)  # each job exactly once
        assert all(m["routing_key"] == "inference" for m in received)

        r.set(HOLD, "1", ex=30)
        with stack.client(KEY_A) as client:
            held = client.post("/v1/jobs", json={"kind": "synthetic", "model": "held"}).json()["id"]
        wait_for(lambda: any(t["id"] == held for tasks in worker.inspect("active").values() for t in tasks),
                 30, "celery inspect active to report the held job")
        active = [t for tasks in worker.inspect("active").values() for t in tasks]
        assert [(t["name"], t["args"]) for t in active if t["id"] == held] == [("gpuq.run_job", [held])]
        r.delete(HOLD)
    finally:
        worker.stop()


def _ids(message: dict[str, Any]) -> list[str]:
    return message["args"][0] if message["task"] == "gpuq.run_group" else [message["args"][0]]


def test_concurrent_replays_make_one_job_and_one_message_entry_per_key(stack: MiniStack,
                                                                      models: dict[str, str]) -> None:
    keys = [f"replay-{i % 10}" for i in range(30)]
    bodies = [_embed(models, f"replayed {i % 10}") for i in range(30)]
    answers = _together(stack, bodies, keys)
    assert sorted(a.status_code for a in answers) == [200] * 20 + [202] * 10
    by_key: dict[str, set[str]] = {}
    for key, answer in zip(keys, answers):
        by_key.setdefault(key, set()).add(answer.json()["id"])
    assert all(len(ids) == 1 for ids in by_key.values())
    jobs = {i for ids in by_key.values() for i in ids}
    assert stack.r().zcard("gpuq:tenant:alpha:jobs") == 10
    assert Counter(_queued_ids(stack)) == Counter(jobs)  # every stored job queued once, nothing else queued


def test_an_in_flight_quota_race_admits_exactly_the_quota(stack: MiniStack) -> None:
    from tests.conftest import KEY_B

    bodies = [{"kind": "synthetic", "model": f"race-{i}", "params": {"steps": 0}} for i in range(20)]
    answers = _together(stack, bodies, key=KEY_B)
    assert sorted(a.status_code for a in answers) == [202] * 5 + [429] * 15
    accepted = {a.json()["id"] for a in answers if a.status_code == 202}
    r = stack.r()
    assert set(r.zrange("gpuq:quota:beta:inflight", 0, -1)) == accepted
    assert r.zcard("gpuq:tenant:beta:jobs") == 5
    assert Counter(_queued_ids(stack)) == Counter(accepted)


def test_gpuq_api_with_two_workers_accepts_submits_on_one_port(stack: MiniStack) -> None:
    port = free_port()
    api = Service("api", {**stack.env, "GPUQ_API_PORT": str(port)}, stack.log_dir, f"api-two-{port}",
                  "--log-level", "warning", "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: len(_server_processes(api.pid)) == 2, 60, "two API processes")
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60, "API /healthz")
        bodies = [{"kind": "synthetic", "model": f"two-{i}", "params": {"steps": 0}} for i in range(40)]
        answers = _together(stack, bodies, url=url)
        assert [a.status_code for a in answers] == [202] * 40
        assert Counter(_queued_ids(stack)) == Counter(a.json()["id"] for a in answers)
    finally:
        api.stop()


def _server_processes(pid: int) -> list[psutil.Process]:
    """uvicorn's server processes under ``pid`` (multiprocessing's resource tracker is a child too)."""
    return [child for child in psutil.Process(pid).children() if "spawn_main" in " ".join(child.cmdline())]
