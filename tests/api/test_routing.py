"""Affinity routing on a private Redis with two registered workers: first bursts and new models."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from gpuq.api.routing import Router
from gpuq.common import keys
from gpuq.common.embedded_redis import EmbeddedRedis
from gpuq.common.jobs.registry import get_spec
from gpuq.common.settings import Settings

NODES = ("a@host", "b@host")


@pytest.fixture()
def router(tmp_path: Path) -> Iterator[Router]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        for node in NODES:
            r.zadd(keys.worker_expiry(), {node: time.time() + 60})
            r.hset(keys.worker_queues(), node, json.dumps({"queues": {f"inference@{node}": "inference"}}))
        yield Router(r, Settings(redis_url=server.url))
    finally:
        server.stop()


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
