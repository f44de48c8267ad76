"""Webhooks end to end: a real sender process, a real HTTP receiver on loopback, real jobs."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gpuq.common.webhooks.signing import verify_signature
from tests.conftest import WEBHOOK_SECRET_A
from tests.support.jobs import run, submit, wait_status
from tests.support.processes import Service
from tests.support.webhook_receiver import Delivery, Receiver

SENDER_ENV = {"GPUQ_WEBHOOK_TIMEOUT_S": "1", "GPUQ_WEBHOOK_BACKOFF_S": "0.3", "GPUQ_WEBHOOK_BACKOFF_MAX_S": "1",
              "GPUQ_WEBHOOK_MAX_ATTEMPTS": "4", "GPUQ_WEBHOOK_PROGRESS_INTERVAL_S": "0.5"}


class Sender:
    """The ``gpuq webhooks`` process, restartable."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = {**env, **SENDER_ENV}, log_dir
        self.svc = Service("webhooks", self.env, log_dir, "webhooks")

    def restart(self) -> None:
        self.svc.stop()
        self.svc = Service("webhooks", self.env, self.log_dir, "webhooks")


@pytest.fixture(scope="module")
def sender(service_env: dict[str, str], log_dir: Path, worker: object) -> Iterator[Sender]:
    s = Sender(service_env, log_dir)
    yield s
    s.svc.stop()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _job(receiver: Receiver, events: list[str] | None = None, steps: int = 3, step_ms: int = 50,
         **extra: Any) -> dict[str, Any]:
    hook: dict[str, Any] = {"url": receiver.url(f"/hook/{uuid.uuid4().hex[:6]}")}
    if events is not None:
        hook["events"] = events
    return {"kind": "synthetic", "model": "hooked", "params": {"steps": steps, "step_ms": step_ms, **extra},
            "webhook": hook}


def _terminal(got: list[Delivery]) -> bool:
    return any(d.body["type"] in ("completed", "failed", "cancelled") for d in got)


def test_deliveries_are_signed_ordered_throttled_and_carry_the_outcome(client: httpx.Client, sender: Sender,
                                                                      receiver: Receiver) -> None:
    job = run(client, _job(receiver, ["started", "progress", "completed"], steps=3))
    got = receiver.wait_for(_terminal)
    assert job["webhook"]["url"].startswith(receiver.url("/hook/"))
    assert [d.body["type"] for d in got] == ["started", "progress", "progress", "completed"]
    # Progress is throttled to one per 0.5 s, and the last step always goes out: steps 1 and 3, not 2.
    assert [d.body["data"]["done"] for d in got if d.body["type"] == "progress"] == [1, 3]
    for d in got:
        assert verify_signature(WEBHOOK_SECRET_A, d.raw, d.headers["x-gpuq-signature"])
        assert not verify_signature("another-secret-0123456789", d.raw, d.headers["x-gpuq-signature"])
        assert d.body["job_id"] == job["id"] and d.headers["x-gpuq-event"] == d.body["type"]
    assert len({d.headers["x-gpuq-delivery"] for d in got}) == len(got)
    final = got[-1].body["job"]
    assert final["status"] == "succeeded" and final["result"]["steps"] == 3 and final["result"]["echo"] is None
    assert [e for e in got[-1].body["event_id"].split("-")] and got[-1].path.startswith("/hook/")


def test_default_events_are_the_outcome_only(client: httpx.Client, sender: Sender, receiver: Receiver) -> None:
    job = run(client, _job(receiver, None, fail="error"))
    got = receiver.wait_for(_terminal)
    assert [d.body["type"] for d in got] == ["failed"]
    assert got[0].body["job"]["error"]["message"] == "synthetic failure requested" and job["status"] == "failed"


def test_receiver_errors_are_retried_with_exponential_backoff(client: httpx.Client, sender: Sender,
                                                              receiver: Receiver) -> None:
    receiver.fail_next = 2
    run(client, _job(receiver, ["completed"]))
    got = receiver.wait_for(_terminal)
    assert len(receiver.attempts) == 3 and got[0].headers["x-gpuq-attempt"] == "3"
    gaps = [b.at - a.at for a, b in zip(receiver.attempts, receiver.attempts[1:])]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3  # 0.3 s then 0.6 s, each with jitter down to half
    assert receiver.attempts[0].raw == receiver.attempts[2].raw  # same body, fresh signature
    assert all(verify_signature(WEBHOOK_SECRET_A, d.raw, d.headers["x-gpuq-signature"]) for d in receiver.attempts)


def test_a_receiver_that_is_down_gets_the_deliveries_once_it_is_up(client: httpx.Client, sender: Sender) -> None:
    later = Receiver()
    job = run(client, _job(later, ["started", "completed"]))
    assert job["status"] == "succeeded"
    time.sleep(0.5)  # at least one attempt fails: nothing listens yet
    later.start()
    try:
        got = later.wait_for(_terminal)
    finally:
        later.stop()
    assert [d.body["type"] for d in got] == ["started", "completed"]


def test_a_dead_or_slow_receiver_never_affects_the_job(client: httpx.Client, sender: Sender,
                                                       receiver: Receiver, redis_url: str) -> None:
    dead = Receiver()  # never started
    slow = Receiver().start()
    slow.stall_s = 3  # longer than the sender's 1 s timeout: every attempt times out
    try:
        started = time.monotonic()
        doomed = run(client, _job(dead, ["started", "progress", "completed"], steps=5))
        stalled = run(client, _job(slow, ["completed"]))
        assert doomed["status"] == stalled["status"] == "succeeded"
        assert time.monotonic() - started < 20
        healthy = run(client, _job(receiver, ["completed"]))
        receiver.wait_for(_terminal, timeout=10)  # other jobs' deliveries are not held up
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dead_letters = [json.loads(x) for x in r.lrange("gpuq:wh:dead", 0, -1)]
            if {doomed["id"], stalled["id"]} <= {d["job_id"] for d in dead_letters}:
                break
            time.sleep(0.2)
        assert doomed["id"] in {d["job_id"] for d in dead_letters}
        assert stalled["id"] in {d["job_id"] for d in dead_letters}
        assert client.get(f"/v1/jobs/{healthy['id']}").json()["status"] == "succeeded"
    finally:
        slow.stop()


def test_sender_restart_resumes_without_losing_deliveries(client: httpx.Client, sender: Sender,
                                                          receiver: Receiver) -> None:
    sender.svc.stop()
    job = run(client, _job(receiver, ["started", "completed"]))
    time.sleep(0.3)
    assert receiver.received == []
    sender.restart()
    got = receiver.wait_for(_terminal, timeout=30)
    assert [d.body["type"] for d in got] == ["started", "completed"] and got[0].body["job_id"] == job["id"]


def test_the_signing_secret_never_reaches_the_record_or_events(client: httpx.Client, receiver: Receiver) -> None:
    job = submit(client, _job(receiver, ["completed"], steps=1))
    done = wait_status(client, job["id"])
    events = client.get(f"/v1/jobs/{job['id']}/events", params={"follow": "false"}).text
    assert WEBHOOK_SECRET_A not in json.dumps(done) and WEBHOOK_SECRET_A not in events
    assert done["webhook"] == {"url": job["webhook"]["url"], "events": ["completed"]}


SSRF = [
    ("http://10.0.0.1/hook", "private"),
    ("http://192.168.1.20:8080/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://127.0.0.2:9/hook", "loopback"),  # only 127.0.0.1 is allowlisted in the tests
    ("http://[::1]:9/hook", "loopback"),
    ("http://[::ffff:10.1.2.3]/hook", "private"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://100.64.0.1/hook", "non-routable"),
    ("http://[fec0::1]/hook", "site-local"),  # the ipaddress module calls site-local global
    ("http://[fec0:1::10]:8080/hook", "site-local"),
    ("http://[2002:a00:1::1]/hook", "6to4"),
    ("http://[3fff::1]/hook", "documentation"),
    ("http://[64:ff9b::a00:1]/hook", "reserved"),  # NAT64 of 10.0.0.1
    ("http://[::a00:1]/hook", "reserved"),  # IPv4-compatible, deprecated
    ("ftp://example.com/hook", "http:// or https://"),
    ("http://user:pw@127.0.0.1/hook", "credentials"),
    ("http://no-such-host.invalid/hook", "cannot be resolved"),
    ("http:///hook", "no host"),
]


@pytest.mark.parametrize(("url", "why"), SSRF)
def test_webhook_urls_that_could_reach_inside_are_refused(client: httpx.Client, url: str, why: str) -> None:
    body = {"kind": "synthetic", "model": "x", "params": {}, "webhook": {"url": url}}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "webhook.url" and why in resp.json()["error"]["message"]


def test_tenant_without_a_signing_secret_cannot_ask_for_webhooks(client_b: httpx.Client) -> None:
    body = {"kind": "synthetic", "model": "x", "params": {}, "webhook": {"url": "http://127.0.0.1:9/x"}}
    resp = client_b.post("/v1/jobs", json=body)
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "webhook"


def test_unknown_webhook_event_names_the_field(client: httpx.Client) -> None:
    body = {"kind": "synthetic", "model": "x", "params": {},
            "webhook": {"url": "http://127.0.0.1:9/x", "events": ["completed", "exploded"]}}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "webhook.events.1"
