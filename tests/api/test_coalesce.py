"""The coalescer's grouping, publishing to a real Redis broker: concurrent submits share a message, a lone
one pays no window, models never mix, a broker failure reaches every job of the group."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from celery import Celery

from gpuq.api.coalesce import Coalescer
from gpuq.common import dispatch
from gpuq.common.celery_config import celery_config, queue_lists
from gpuq.common.errors import ServiceUnavailable
from gpuq.common.jobs.registry import get_spec
from gpuq.common.settings import Settings

SPEC = get_spec("inference")


class Broker:
    """Publishes through gpuq's real dispatch to its own queue on a Redis server, and reads the messages back."""

    def __init__(self, redis_url: str) -> None:
        self.url = redis_url
        self.queue = f"coalesce-test-{uuid.uuid4().hex[:8]}"  # no worker consumes it
        self.app = Celery("coalesce-test")
        self.app.conf.update(celery_config(Settings(redis_url=redis_url)))

    def one(self, job_id: str, spec: Any, priority: str, queue: str) -> None:
        dispatch.publish(self.app, job_id, spec, priority, self.queue)

    def group(self, ids: list[str], spec: Any, priority: str, queue: str) -> None:
        dispatch.publish_group(self.app, ids, spec, priority, self.queue)

    @property
    def messages(self) -> list[list[str]]:
        """The job ids each queued message carries."""
        r = redis.Redis.from_url(self.url)
        out = []
        for name in queue_lists(self.queue):
            for raw in r.lrange(name, 0, -1):
                args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
                out.append(args[0] if isinstance(args[0], list) else [args[0]])
        return out


@pytest.fixture()
def broker(redis_url: str) -> Broker:
    return Broker(redis_url)


def submit_together(coalescer: Coalescer, ids: list[str], model: str = "m") -> list[BaseException | None]:
    barrier = threading.Barrier(len(ids))

    def one(job_id: str) -> BaseException | None:
        with coalescer.submitting():
            barrier.wait()
            try:
                coalescer.publish(job_id, SPEC, model, "normal", "inference")
            except ServiceUnavailable as exc:
                return exc
            return None
    with ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(one, ids))


def test_concurrent_submits_share_messages_and_every_job_is_published_once(broker: Broker) -> None:
    coalescer = Coalescer(0.05, 64, broker.one, broker.group)
    ids = [f"job-{i}" for i in range(20)]
    assert submit_together(coalescer, ids) == [None] * 20
    published = [j for message in broker.messages for j in message]
    assert sorted(published) == sorted(ids)
    assert len(broker.messages) < 20 and max(len(m) for m in broker.messages) > 1


def test_a_full_group_is_published_without_waiting_out_the_window(broker: Broker) -> None:
    coalescer = Coalescer(30.0, 4, broker.one, broker.group)
    start = time.monotonic()
    submit_together(coalescer, [f"job-{i}" for i in range(8)])
    assert time.monotonic() - start < 10
    assert sorted(len(m) for m in broker.messages) == [4, 4]


def test_a_lone_submit_is_published_at_once(broker: Broker) -> None:
    coalescer = Coalescer(30.0, 64, broker.one, broker.group)
    start = time.monotonic()
    with coalescer.submitting():
        coalescer.publish("alone", SPEC, "m", "normal", "inference")
    assert time.monotonic() - start < 1 and broker.messages == [["alone"]]


def test_different_models_never_share_a_message(broker: Broker) -> None:
    coalescer = Coalescer(0.05, 64, broker.one, broker.group)
    barrier = threading.Barrier(6)

    def one(i: int) -> None:
        with coalescer.submitting():
            barrier.wait()
            coalescer.publish(f"job-{i}", SPEC, f"model-{i % 2}", "normal", "inference")
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(6)))
    for message in broker.messages:
        assert len({int(j.split("-")[1]) % 2 for j in message}) == 1


def test_a_broker_failure_fails_every_job_of_the_group() -> None:
    down = Broker("redis://127.0.0.1:1/0")  # nothing listens there
    coalescer = Coalescer(0.05, 64, down.one, down.group)
    errors = submit_together(coalescer, [f"job-{i}" for i in range(5)])
    assert all(isinstance(e, ServiceUnavailable) for e in errors)


@pytest.mark.parametrize("n", [1, 3])
def test_no_group_is_left_open(broker: Broker, n: int) -> None:
    coalescer = Coalescer(0.01, 64, broker.one, broker.group)
    submit_together(coalescer, [f"job-{i}" for i in range(n)])
    assert not coalescer._open
