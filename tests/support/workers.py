"""Workers as the API sees them, registered on a private Redis without running any."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from gpuq.common import keys
from gpuq.common.embedded_redis import EmbeddedRedis

NODES = ("a@host", "b@host")


@contextmanager
def registered_workers(where: Path, nodes: tuple[str, ...] = NODES) -> Iterator[str]:
    """A private Redis (its URL) on which ``nodes`` are live workers, each consuming its own inference queue."""
    server = EmbeddedRedis(where / "redis").start()
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        for node in nodes:
            r.zadd(keys.worker_expiry(), {node: time.time() + 60})
            r.hset(keys.worker_queues(), node, json.dumps({"queues": {f"inference@{node}": "inference"}}))
        yield server.url
    finally:
        server.stop()
