"""The coalescer's grouping: concurrent submits share a message, a lone one pays no window, failures reach all."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.coalesce import Coalescer
from common.errors import ServiceUnavailable
from common.jobs.registry import get_spec

SPEC = get_spec("inference")


class Broker:
    """Records what would be published (the real publishing is exercised end to end in tests/e2e)."""

    def __init__(self, fail: bool = False) -> None:
        self.messages: list[list[str]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def one(self, job_id: str, spec: object, priority: str, queue: str) -> None:
        self.group([job_id], spec, priority, queue)

    def group(self, ids: list[str], spec: object, priority: str, queue: str) -> None:
        if self.fail:
            raise ServiceUnavailable("queue unavailable: ConnectionError")
        with self.lock:
            self.messages.append(list(ids))


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


def test_concurrent_submits_share_messages_and_every_job_is_published_once() -> None:
    broker = Broker()
    coalescer = Coalescer(0.05, 64, broker.one, broker.group)
    ids = [f"job-{i}" for i in range(20)]
    assert submit_together(coalescer, ids) == [None] * 20
    published = [j for message in broker.messages for j in message]
    assert sorted(published) == sorted(ids)
    assert len(broker.messages) < 20 and max(len(m) for m in broker.messages) > 1


def test_a_full_group_is_published_without_waiting_out_the_window() -> None:
    broker = Broker()
    coalescer = Coalescer(30.0, 4, broker.one, broker.group)
    start = time.monotonic()
    submit_together(coalescer, [f"job-{i}" for i in range(8)])
    assert time.monotonic() - start < 10
    assert sorted(len(m) for m in broker.messages) == [4, 4]


def test_a_lone_submit_is_published_at_once() -> None:
    broker = Broker()
    coalescer = Coalescer(30.0, 64, broker.one, broker.group)
    start = time.monotonic()
    with coalescer.submitting():
        coalescer.publish("alone", SPEC, "m", "normal", "inference")
    assert time.monotonic() - start < 1 and broker.messages == [["alone"]]


def test_different_models_never_share_a_message() -> None:
    broker = Broker()
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
    coalescer = Coalescer(0.05, 64, Broker(fail=True).one, Broker(fail=True).group)
    errors = submit_together(coalescer, [f"job-{i}" for i in range(5)])
    assert all(isinstance(e, ServiceUnavailable) for e in errors)


@pytest.mark.parametrize("n", [1, 3])
def test_no_group_is_left_open(n: int) -> None:
    broker = Broker()
    coalescer = Coalescer(0.01, 64, broker.one, broker.group)
    submit_together(coalescer, [f"job-{i}" for i in range(n)])
    assert not coalescer._open
