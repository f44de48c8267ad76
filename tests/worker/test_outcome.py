"""Every end of a job, through real processes: a job run alone and the same job run as a member of a group
message end with the same record, the same events on their stream and the same acknowledgement of their message.

The policy table itself (``outcome.decide``) is a pure function and is checked directly.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from gpuq.common import keys
from gpuq.common.celery_config import GROUP_TASK_NAME, TASK_NAME, celery_config, message_options
from gpuq.common.errors import (AttemptSuperseded, JobCancelled, JobError, JobInterrupted, ServiceUnavailable, TransientJobError,
                                WorkerLost)
from gpuq.common.jobs.registry import get_spec
from gpuq.common.records import JobStore
from gpuq.common.schemas import JobRequest
from gpuq.common.settings import Settings
from gpuq.worker.outcome import backoff_s, decide
from tests.conftest import KEY_A
from tests.support.jobs import wait_status
from tests.support.processes import wait_for
from tests.support.stack import MiniStack, worker_env

TIME_LIMIT_S = 3  # the stack's job time limit: the soft limit a slow job runs into
UNACKED = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged messages


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[MiniStack]:
    env = {**worker_env(), "GPUQ_JOB_TIME_LIMIT_S": str(TIME_LIMIT_S), "GPUQ_RETRY_BACKOFF_S": "0.2",
           "GPUQ_RETRY_BACKOFF_MAX_S": "1", "GPUQ_AFFINITY_ROUTING": "false"}
    with MiniStack(env, log_dir, "outcome") as s:
        s.worker("oc", pool="threads", concurrency=4)
        yield s


@pytest.fixture(scope="module")
def producer(stack: MiniStack) -> Celery:
    app = Celery("outcome-producer")
    app.conf.update(celery_config(Settings(redis_url=stack.redis.url)))
    return app


@pytest.fixture()
def client(stack: MiniStack) -> Iterator[httpx.Client]:
    with stack.client(KEY_A) as c:
        yield c


QUICK = {"steps": 1}
SLOW = {"steps": 200, "step_ms": 50}  # 10 s: past the soft limit, long enough to cancel while running
ERROR = {"type": "job_error", "message": "synthetic failure requested", "retryable": False, "field": None}
TRANSIENT = {"type": "transient_error", "message": "synthetic transient failure requested", "retryable": True,
             "field": None}
TIMEOUT = {"type": "timeout", "message": "job exceeded its time limit", "retryable": False, "field": None}
# case: (params, cancel once running, expected record, expected events without progress, dead-lettered)
CASES: dict[str, tuple[dict[str, Any], bool, dict[str, Any], list[str], bool]] = {
    "success": (QUICK, False, {"status": "succeeded", "error": None, "attempts": 1},
                ["queued", "started", "completed"], False),
    "permanent_failure": ({"fail": "error"}, False, {"status": "failed", "error": ERROR, "attempts": 1},
                          ["queued", "started", "failed"], False),
    "retryable_failure": ({"fail": "transient"}, False,
                          {"status": "failed", "error": TRANSIENT, "attempts": 3},
                          ["queued", "started", "log", "started", "log", "started", "failed"], True),
    "cancel": (SLOW, True, {"status": "cancelled", "error": None, "attempts": 1},
               ["queued", "started", "log", "cancelled"], False),
    "soft_time_limit": (SLOW, False, {"status": "failed", "error": TIMEOUT, "attempts": 1},
                        ["queued", "started", "failed"], False),
}


def _create(stack: MiniStack, params: dict[str, Any]) -> str:
    from gpuq.api.submission import prepare

    body = JobRequest.model_validate({"kind": "synthetic", "model": "outcome", "params": params})
    job = prepare(body, "alpha", Settings(redis_url=stack.redis.url))
    JobStore(stack.r()).create_many([(job.fields, None, "")])
    return str(job.fields["id"])


def _send(producer: Celery, name: str, args: list[Any], limit_s: int = TIME_LIMIT_S) -> None:
    options = message_options(get_spec("synthetic"), "normal", "inference",
                              Settings(redis_url="redis://unused", job_time_limit_s=limit_s))
    producer.send_task(name, args=args, **options)


def _events(client: httpx.Client, job_id: str) -> list[str]:
    text = client.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"}).text
    return [line[7:] for line in text.splitlines() if line.startswith("event: ") and line[7:] != "progress"]


def _end(stack: MiniStack, client: httpx.Client, job_id: str, cancel: bool) -> dict[str, Any]:
    if cancel:
        wait_status(client, job_id, ("running",), timeout=30)
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    record = wait_status(client, job_id, timeout=60)
    r = stack.r()
    # Every message is acknowledged once its jobs have their outcome: nothing left unacked, nothing queued.
    wait_for(lambda: r.hlen(UNACKED) == 0, 15, "every message acknowledged")
    return {"status": record["status"], "error": record["error"], "attempts": record["attempts"],
            "events": _events(client, job_id), "dead": r.zscore(keys.deadletter(), job_id) is not None,
            "held": r.sismember(keys.worker_jobs(str(stack.node("oc"))), job_id),
            "running": r.zscore(keys.running("inference"), job_id) is not None}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_job_ends_the_same_way_alone_and_in_a_group(stack: MiniStack, producer: Celery,
                                                      client: httpx.Client, case: str) -> None:
    params, cancel, record, events, dead = CASES[case]
    expected = {**record, "events": events, "dead": dead, "held": False, "running": False}
    alone = _create(stack, params)
    _send(producer, TASK_NAME, [alone])
    assert _end(stack, client, alone, cancel) == expected
    # In a group the member runs after a quick companion, as the runner runs any kind's group, one by one.
    companion, member = _create(stack, QUICK), _create(stack, params)
    _send(producer, GROUP_TASK_NAME, [[companion, member]])
    assert _end(stack, client, member, cancel) == expected
    assert wait_status(client, companion)["status"] == "succeeded"


def test_a_retry_waits_out_its_backoff(stack: MiniStack, producer: Celery, client: httpx.Client) -> None:
    job_id = _create(stack, {"fail": "transient"})
    _send(producer, TASK_NAME, [job_id])
    wait_status(client, job_id, timeout=60)
    stream = stack.r().xrange(keys.events(job_id))
    times = [int(entry_id.split("-")[0]) / 1000 for entry_id, fields in stream if fields["type"] == "started"]
    assert len(times) == 3
    # Backoff 0.2 s, then 0.4 s (GPUQ_RETRY_BACKOFF_S=0.2): each retry starts no sooner.
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4


def test_policy_table() -> None:
    assert decide({"ok": 1}, 1, 3) == ("succeed", None)
    cancelled, interrupted, lost = JobCancelled("stop"), JobInterrupted("shutdown"), WorkerLost("gone")
    assert decide(cancelled, 1, 3) == ("cancel", cancelled)
    assert decide(interrupted, 1, 3) == ("hand_back", interrupted)  # retryable, but handed back, not retried
    assert decide(redis.ConnectionError("lost"), 1, 3) == ("hand_back", None)
    assert decide(redis.TimeoutError("slow"), 2, 3) == ("hand_back", None)
    assert decide(lost, 1, 3) == ("dead_letter", lost)
    superseded = AttemptSuperseded("a later attempt holds the job")
    assert decide(superseded, 3, 3) == ("drop", superseded)  # nothing written, not even on the last attempt
    transient, unavailable = TransientJobError("hub 503"), ServiceUnavailable("broker")
    assert decide(transient, 1, 3) == ("retry", transient)
    assert decide(unavailable, 2, 3) == ("retry", unavailable)
    assert decide(transient, 3, 3) == ("dead_letter", transient)
    permanent = JobError("bad")
    assert decide(permanent, 1, 3) == ("fail", permanent)
    action, error = decide(ValueError("nope"), 1, 3)
    assert action == "fail" and error is not None and error.type_name == "job_error"
    action, error = decide(MemoryError("out of memory"), 1, 3)
    assert action == "fail" and error is not None and error.type_name == "resource_exhausted"


def test_backoff_doubles_up_to_its_cap() -> None:
    from gpuq.common.settings import get_settings

    s = get_settings()
    assert backoff_s(1) == min(s.retry_backoff_s, s.retry_backoff_max_s)
    assert backoff_s(3) == min(s.retry_backoff_s * 4, s.retry_backoff_max_s)
    assert backoff_s(50) == s.retry_backoff_max_s


@pytest.mark.timeout(300)
def test_redis_lost_under_a_job_hands_it_back_alone_and_in_a_group(log_dir: Path) -> None:
    env = {**worker_env(), "GPUQ_LEASE_TTL_S": "3", "GPUQ_SWEEP_INTERVAL_S": "1", "GPUQ_WORKER_HEARTBEAT_S": "1",
           "GPUQ_AFFINITY_ROUTING": "false"}
    with MiniStack(env, log_dir, "outcome-redis") as s:
        s.worker("rl", pool="threads", concurrency=4)
        app = Celery("outcome-redis-producer")
        app.conf.update(celery_config(Settings(redis_url=s.redis.url)))
        # Two seconds of steps, then a Redis write in the job's own thread (the result is stored as an artifact).
        slow = {"steps": 20, "step_ms": 100, "result_bytes": 200_000}
        alone, companion, member = _create(s, slow), _create(s, QUICK), _create(s, slow)
        _send(app, TASK_NAME, [alone], limit_s=120)  # not the short limit of the other tests' stack
        _send(app, GROUP_TASK_NAME, [[companion, member]], limit_s=120)
        with s.client(KEY_A) as c:
            for job_id in (alone, member):
                wait_status(c, job_id, ("running",), timeout=30)
            assert s.redis is not None
            s.redis.stop()  # the jobs end while Redis is away: neither may fail for it
            time.sleep(4)
            s.redis.start()
            # Celery's consumer may not survive its broker vanishing (kombu's reconnect can raise): a second
            # worker makes sure someone is there to sweep what the first left running.
            s.worker("rescue", pool="threads", concurrency=4)
            ends = [wait_status(c, job_id, timeout=120) for job_id in (alone, member)]
            events = [_events(c, job_id) for job_id in (alone, member)]
    seen = [(e["status"], e["error"], e["attempts"]) for e in ends]
    assert [(e["status"], e["error"]) for e in ends] == [("succeeded", None)] * 2, (seen, events)
    assert [e.count("completed") for e in events] == [1, 1] and all("failed" not in e for e in events), events
    # Each ran again (how often depends on which redelivery claims it first: sweeper, restored message).
    assert all(e["attempts"] >= 2 for e in ends), seen


@pytest.mark.timeout(120)
def test_a_record_whose_params_do_not_validate_fails_before_its_claim(stack: MiniStack, producer: Celery,
                                                                     client: httpx.Client) -> None:
    """Written by hand or by another version, such a record fails at once, alone and as a group member, instead
    of being claimed and then raising outside every outcome (running until the sweeper, then again)."""
    r = stack.r()
    alone, companion, member = _create(stack, QUICK), _create(stack, QUICK), _create(stack, QUICK)
    for job_id in (alone, member):
        r.hset(keys.job(job_id), "params", '{"steps": "many"}')
    _send(producer, TASK_NAME, [alone])
    _send(producer, GROUP_TASK_NAME, [[companion, member]])
    for job_id in (alone, member):
        record = wait_status(client, job_id, timeout=60)
        assert (record["status"], record["attempts"], record["error"]["type"], record["error"]["field"]) == \
            ("failed", 0, "invalid_input", "params"), record
        assert "steps" in record["error"]["message"]
        assert _events(client, job_id) == ["queued", "failed"]
    assert wait_status(client, companion)["status"] == "succeeded"
    wait_for(lambda: r.hlen(UNACKED) == 0, 15, "every message acknowledged")
