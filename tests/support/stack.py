"""A private gpuq stack for tests that need their own workers: its own Redis, API and worker processes.

Tests that start threads-pool workers, kill workers or change cache settings use one of these, so the
session's worker never takes their jobs and their workers never take the session's.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import redis

from gpuq.common import keys
from gpuq.common.embedded_redis import EmbeddedRedis
from tests.support.processes import Service, start_api, start_worker, wait_for


class MiniStack:
    """Redis + API + named workers, all real processes; ``stop`` ends them all."""

    def __init__(self, base_env: dict[str, str], log_dir: Path, name: str, cwd: Path | None = None,
                 **env: str) -> None:
        self.name = name
        self.log_dir = log_dir / name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd  # every process's working directory (None: the repository's)
        self.redis = EmbeddedRedis(self.log_dir / "redis").start()
        self.env = {**base_env, "GPUQ_REDIS_URL": self.redis.url, **env}
        self.workers: dict[str, Service] = {}
        self.api, self.url = start_api(self.env, self.log_dir, cwd=cwd)

    def worker(self, name: str, pool: str = "threads", concurrency: int | None = None, **env: str) -> Service:
        """Start a worker and wait until the API would route to it (it is live and registered its queues)."""
        svc = start_worker({**self.env, **env}, self.log_dir, name, pool=pool, concurrency=concurrency,
                           cwd=self.cwd)
        self.workers[name] = svc
        wait_for(lambda: self.node(name) is not None, 120, f"worker {name} live")
        return svc

    def node(self, name: str) -> str | None:
        """The full node name of worker ``name`` once it is live and registered."""
        r = self.r()
        live = r.zrangebyscore(keys.worker_expiry(), time.time(), "+inf")
        registered = set(r.hkeys(keys.worker_queues()))
        return next((n for n in live if n.startswith(f"{name}@") and n in registered), None)

    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def log(self, name: str) -> str:
        return self.workers[name].log()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for svc in self.workers.values():
            if svc.alive():
                svc.stop()
        self.api.stop()
        self.redis.stop()


def worker_env() -> dict[str, str]:
    """The session's environment (settings, model roots, keys) without its Redis."""
    return {k: v for k, v in os.environ.items() if k != "GPUQ_REDIS_URL"}


def client_fixture(key: str) -> Any:
    """A ``client`` fixture for a module with its own ``stack`` fixture: ``key``'s client on that stack's API
    (``client = client_fixture(KEY_A)``; it shadows the session's ``client`` in that module only)."""

    @pytest.fixture()
    def client(stack: MiniStack) -> Iterator[httpx.Client]:
        with stack.client(key) as c:
            yield c

    return client
