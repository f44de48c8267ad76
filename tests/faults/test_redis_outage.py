"""Redis stopped (or frozen) while jobs, webhooks and SSE streams are in flight, then back: no process of the stack
exits, every accepted job completes exactly once, every webhook is delivered, every stream ends complete.

The stack's services are started directly (API, a prefork worker, a threads worker, the webhook sender), with
no supervisor: each must ride out the outage on its own.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from gpuq.common import keys
from tests.faults.conftest import Stack, wait_job
from tests.support.processes import Service, wait_for
from tests.support.webhook_receiver import Receiver

SENDER_ENV = {"GPUQ_WEBHOOK_TIMEOUT_S": "2", "GPUQ_WEBHOOK_BACKOFF_S": "0.3", "GPUQ_WEBHOOK_BACKOFF_MAX_S": "1",
              "GPUQ_WEBHOOK_MAX_ATTEMPTS": "20"}
JOBS, STREAMS = 12, 4


def _job(receiver: Receiver, i: int) -> dict[str, Any]:
    return {"kind": "synthetic", "model": "outage", "inputs": i, "params": {"steps": 8, "step_ms": 250},
            "webhook": {"url": receiver.url(f"/hook/{i}-{uuid.uuid4().hex[:6]}")}}


class Stream(threading.Thread):
    """An SSE client following one job to its end; it reconnects with Last-Event-ID if the API cuts it (the
    drill expects it never has to)."""

    def __init__(self, url: str, key: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.job_id = url, key, job_id
        self.events: list[str] = []
        self.reconnects = 0
        self.why: list[str] = []  # why each connection ended before the terminal event

    def run(self) -> None:
        last = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (self.events and self.events[-1] == "completed"):
            headers = {"Authorization": f"Bearer {self.key}", **({"Last-Event-ID": last} if last else {})}
            try:
                with httpx.stream("GET", f"{self.url}/v1/jobs/{self.job_id}/events", headers=headers,
                                  timeout=60) as resp:
                    self.why.append(f"HTTP {resp.status_code}")
                    for line in resp.iter_lines():
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("event: "):
                            self.events.append(line[7:])
            except httpx.HTTPError as exc:
                self.why.append(f"{type(exc).__name__}: {exc}")
            if not (self.events and self.events[-1] == "completed"):
                self.reconnects += 1
                time.sleep(0.5)


def _services(stack: Stack) -> dict[str, Service]:
    assert stack.api is not None
    return {**stack.workers, "api": stack.api}


def _stop_redis(stack: Stack, how: str, seconds: int) -> None:
    """``stopped``: a clean shutdown, then a start on the same port and data (a restart, a failover, maintenance);
    ``frozen``: SIGSTOP then SIGCONT (a stalled host or network: connections stay open and hang)."""
    assert stack.redis is not None and stack.redis.proc is not None
    if how == "frozen":
        stack.redis.proc.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        stack.redis.proc.send_signal(signal.SIGCONT)
        return
    stack.redis.stop()
    time.sleep(seconds)
    stack.start_redis()


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("how", "down_s"), [("stopped", 2), ("stopped", 30), ("frozen", 5)])
def test_redis_outage_mid_flight_stops_no_process_and_loses_nothing(stack: Stack, outcome, how: str,
                                                                      down_s: int) -> None:
    stack.start_redis()
    stack.start_worker("prefork")
    stack.start_worker("threads", GPUQ_WORKER_POOL="threads", GPUQ_WORKER_CONCURRENCY="8")
    stack.start_api()
    sender = Service("webhooks", {**stack.env, **SENDER_ENV}, stack.dir, "webhooks")
    receiver = Receiver().start()
    services = {**_services(stack), "webhooks": sender}
    pids = {name: svc.pid for name, svc in services.items()}
    try:
        with stack.client() as c:
            jobs = [c.post("/v1/jobs", json=_job(receiver, i)).json() for i in range(JOBS)]
            streams = [Stream(stack.url, c.headers["Authorization"][7:], job["id"]) for job in jobs[:STREAMS]]
            for s in streams:
                s.start()
            wait_for(lambda: any(c.get(f"/v1/jobs/{j['id']}").json()["status"] == "running" for j in jobs), 60,
                     "a job running")
            wait_for(lambda: all(s.events for s in streams), 60, "every stream open")
            _stop_redis(stack, how, down_s)
            final = [wait_job(c, j["id"], timeout=240) for j in jobs]
            for s in streams:
                s.join(240)
            paths = {j["webhook"]["url"].split(str(receiver.port), 1)[1] for j in jobs}
            wait_for(lambda: paths <= _terminal_paths(receiver), 120, "every terminal webhook delivered")
            completions = [_completions(stack, j["id"]) for j in jobs]
        alive = {name: svc.alive() and svc.pid == pids[name] for name, svc in services.items()}
    finally:
        receiver.stop()
        sender.stop()
    assert alive == dict.fromkeys(services, True), (alive, {n: s.log()[-3000:] for n, s in services.items()
                                                           if not alive[n]})
    assert [j["status"] for j in final] == ["succeeded"] * JOBS, [j.get("error") for j in final]
    assert completions == [1] * JOBS
    assert all(s.events and s.events[-1] == "completed" and s.events.count("completed") == 1 for s in streams), \
        [(s.events, s.why) for s in streams]
    assert [s.reconnects for s in streams] == [0] * STREAMS, [s.why for s in streams]  # kept open throughout
    for name in ("api", "webhooks"):  # one line when the outage starts (per loop), not a traceback per try
        text = services[name].log()
        assert "Traceback" not in text and text.count("Redis unavailable") <= 3, text[-3000:]
    delivered = _terminal_counts(receiver)
    outcome.record(f"Redis {how} for {down_s} s with jobs, webhooks and SSE streams in flight (services started "
                   "directly, no supervisor)",
                   "every process keeps running; every job completes exactly once; every webhook and stream "
                   "completes",
                   f"{sum(alive.values())}/{len(alive)} processes still running (same pids); {JOBS}/{JOBS} "
                   f"succeeded, completed events {sorted(set(completions))}; {len(delivered)}/{JOBS} terminal "
                   f"webhooks delivered; {STREAMS}/{STREAMS} open streams kept open (keep-alives) and ended in "
                   "completed")


def _terminal_paths(receiver: Receiver) -> set[str]:
    return set(_terminal_counts(receiver))


def _terminal_counts(receiver: Receiver) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in list(receiver.received):
        if d.body["type"] in ("completed", "failed", "cancelled"):
            counts[d.path] = counts.get(d.path, 0) + 1
    return counts


def _completions(stack: Stack, job_id: str) -> int:
    entries = stack.r.xrange(keys.events(job_id))
    return sum(1 for _, fields in entries if fields.get("type") == "completed")



def _short_job(i: int) -> dict[str, Any]:
    return {"kind": "synthetic", "model": "outage-threads", "inputs": i, "params": {"steps": 6, "step_ms": 300}}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("down_s", [2, 5])
def test_threads_worker_keeps_its_pid_through_a_short_redis_stop_and_finishes_jobs_before_and_after(
        stack: Stack, outcome, down_s: int) -> None:
    # A threads-pool worker alone (nothing else to pick its jobs up): its consumer rebuilds kombu's connection
    # pool when Redis returns, and the process must survive that with the jobs it held and the ones sent after.
    stack.start_redis()
    worker = stack.start_worker("threads", GPUQ_WORKER_POOL="threads", GPUQ_WORKER_CONCURRENCY="4")
    stack.start_api()
    pid = worker.pid
    with stack.client() as c:
        before = [c.post("/v1/jobs", json=_short_job(i)).json() for i in range(8)]
        wait_for(lambda: any(c.get(f"/v1/jobs/{j['id']}").json()["status"] == "running" for j in before), 60,
                 "a job running")
        _stop_redis(stack, "stopped", down_s)
        wait_for(lambda: c.get("/healthz").status_code == 200, 60, "API back")
        after = [c.post("/v1/jobs", json=_short_job(100 + i)).json() for i in range(8)]
        final = [wait_job(c, j["id"], timeout=180) for j in before + after]
    completions = [_completions(stack, j["id"]) for j in before + after]
    alive = worker.alive() and worker.pid == pid
    assert alive, worker.log()[-4000:]
    assert [j["status"] for j in final] == ["succeeded"] * 16, [j.get("error") for j in final]
    assert completions == [1] * 16
    outcome.record(f"Redis stopped for {down_s} s under a threads-pool worker alone, jobs running",
                   "the worker process keeps its pid; jobs sent before and after all complete exactly once",
                   f"worker alive with the same pid: {alive}; 16/16 succeeded, completed events "
                   f"{sorted(set(completions))}")
