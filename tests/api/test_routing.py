"""Affinity routing on a private Redis with two registered workers: first bursts and new models."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from gpuq.api.routing import Router
from gpuq.common.jobs.registry import get_spec
from gpuq.common.settings import Settings
from tests.support.workers import NODES, registered_workers


@pytest.fixture()
def router(tmp_path: Path) -> Iterator[Router]:
    with registered_workers(tmp_path, NODES) as url:
        yield Router(redis.Redis.from_url(url, decode_responses=True), Settings(redis_url=url))


def burst(router: Router, models: list[str]) -> list[str]:
    """Route one job per entry of ``models``, all threads released at once (as a burst of submits)."""
    spec, gate = get_spec("inference"), threading.Barrier(len(models))

    def one(model: str) -> str:
        gate.wait()
        return router.route(spec, model)
    with ThreadPoolExecutor(len(models)) as pool:
        return list(pool.map(one, models))


def test_a_first_burst_waits_for_the_routing_table_instead_of_using_the_shared_queue(router: Router) -> None:
    queues = burst(router, ["m"] * 16)
    assert len(set(queues)) == 1 and queues[0] in {f"inference@{n}" for n in NODES}, queues


def test_two_new_models_arriving_together_are_assigned_to_different_workers(router: Router) -> None:
    queues = burst(router, ["m1", "m2"] * 8)
    first, second = set(queues[0::2]), set(queues[1::2])
    assert len(first) == 1 and len(second) == 1 and first != second, queues
