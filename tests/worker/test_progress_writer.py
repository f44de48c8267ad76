"""The progress writer on a real Redis: events in call order, cancels seen at once, errors raised in the job."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from gpuq.common import keys
from gpuq.common.embedded_redis import free_port
from gpuq.worker.progress_writer import WATCH_S, ProgressWriter


@pytest.fixture()
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def wait_until(check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.002)
    return time.monotonic() - start


def test_events_are_written_in_call_order_and_the_record_holds_the_last(client: redis.Redis) -> None:
    writer, job = ProgressWriter(client), uuid.uuid4().hex
    for step in range(1, 201):
        flags = writer.report(job, "node-a", json.dumps({"done": step, "total": 200}))
        assert not flags.cancel and not flags.draining and flags.error is None
    writer.flush(job)
    done = [json.loads(fields["data"])["done"] for _, fields in client.xrange(keys.events(job))]
    assert done == list(range(1, 201))
    assert json.loads(client.hget(keys.job(job), "progress") or "{}")["done"] == 200
    writer.release(job)


def test_a_cancel_is_seen_without_waiting_for_the_next_report(client: redis.Redis) -> None:
    writer, job = ProgressWriter(client), uuid.uuid4().hex
    writer.report(job, "node-a", json.dumps({"done": 1, "total": 10}))
    writer.flush(job)
    time.sleep(0.1)  # the watcher is subscribed and waiting
    # What the API's cancel does to a running job: set the flag, then announce it.
    client.hset(keys.job(job), "cancel_requested", 1)
    client.publish(keys.cancels(), job)
    waited = wait_until(lambda: writer.flags(job).cancel, timeout=WATCH_S * 2)
    assert waited < WATCH_S / 2, f"cancel seen only after {waited:.3f} s: the announcement was not heard"
    assert writer.report(job, "node-a", json.dumps({"done": 2, "total": 10})).cancel
    writer.release(job)


def test_a_cancel_whose_announcement_was_lost_is_seen_within_a_watch_period(client: redis.Redis) -> None:
    writer, job = ProgressWriter(client), uuid.uuid4().hex
    writer.report(job, "node-a", json.dumps({"done": 1, "total": 10}))
    writer.flush(job)
    client.hset(keys.job(job), "cancel_requested", 1)  # no publish
    wait_until(lambda: writer.flags(job).cancel, timeout=WATCH_S * 3)
    writer.release(job)


def test_draining_is_seen_within_a_watch_period(client: redis.Redis) -> None:
    writer, job, node = ProgressWriter(client), uuid.uuid4().hex, f"node-{uuid.uuid4().hex[:6]}"
    writer.report(job, node, json.dumps({"done": 1, "total": 10}))
    client.set(keys.draining(node), 1, ex=30)
    wait_until(lambda: writer.flags(job).draining, timeout=WATCH_S * 3)
    writer.release(job)


def test_a_failed_write_is_raised_in_the_jobs_thread() -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    writer, job = ProgressWriter(dead), uuid.uuid4().hex
    writer.report(job, "node-a", json.dumps({"done": 1, "total": 2}))
    with pytest.raises(redis.ConnectionError):
        writer.flush(job)
    assert isinstance(writer.report(job, "node-a", "{}").error, redis.ConnectionError)
    writer.release(job)  # best effort: logs, does not raise
