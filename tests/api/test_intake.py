"""The intake's routing on a private Redis with two registered workers: a burst of submits that finds the
routing table stale sends one refresh off the loop, not one per submit, and every job is still routed."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from gpuq.api.intake import Intake
from gpuq.api.routing import Router
from gpuq.common.jobs.registry import JobSpec, get_spec
from gpuq.common.settings import Settings
from tests.support.workers import NODES, registered_workers


class CountingRouter(Router):
    """A router that counts the routes asked of it off the event loop's thread."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        super().__init__(r, settings)
        self.loop_thread = threading.get_ident()
        self.off_loop = 0

    def route(self, spec: JobSpec, model: str, jobs: int = 1) -> str:
        if threading.get_ident() != self.loop_thread:
            self.off_loop += 1
        return super().route(spec, model, jobs)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    with registered_workers(tmp_path, NODES) as url:
        yield url


def test_a_burst_on_a_stale_table_refreshes_it_once_off_the_loop(server: str) -> None:
    settings = Settings(redis_url=server)
    spec = get_spec("inference")

    async def burst() -> tuple[CountingRouter, list[str]]:
        router = CountingRouter(redis.Redis.from_url(server, decode_responses=True), settings)
        client = aioredis.Redis.from_url(server)
        intake = Intake(client, settings, router, builder=None)  # type: ignore[arg-type]  # routing only
        queues = await asyncio.gather(*(intake._routed(spec, "m") for _ in range(64)))
        await client.aclose()
        return router, list(queues)

    router, queues = asyncio.run(burst())
    assert router.off_loop == 1
    assert len(set(queues)) == 1 and queues[0] in {f"inference@{n}" for n in NODES}
    assert sum(router.table.routed.values()) == 64  # each job counted where it went
