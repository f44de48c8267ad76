"""gpuq's own task messages match what Celery publishes, so the API can enqueue inside its submit script."""
from __future__ import annotations

import base64
import json
import uuid

import redis

from api.queue import publish
from common.broker import list_key, task_message
from common.jobs.registry import get_spec
from common.settings import get_settings


def _celery_message(r: redis.Redis, job_id: str, priority: str, queue: str) -> tuple[str, dict]:
    publish(job_id, get_spec("inference"), priority, queue)
    [key] = [k for k in r.keys(f"{queue}*") if k != f"_kombu.binding.{queue}"]
    return key, json.loads(r.lpop(key))


def test_message_matches_celerys_field_by_field(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    for priority in ("high", "normal", "low"):
        job_id, queue = uuid.uuid4().hex, f"broker-test-{uuid.uuid4().hex[:8]}"
        key, theirs = _celery_message(r, job_id, priority, queue)
        our_key, payload = task_message(job_id, get_spec("inference"), priority, queue, get_settings())
        ours = json.loads(payload)
        assert our_key == key
        assert base64.b64decode(ours["body"]) and json.loads(base64.b64decode(ours["body"])) == \
            json.loads(base64.b64decode(theirs["body"]))
        assert set(ours) == set(theirs) and set(ours["headers"]) == set(theirs["headers"])
        assert set(ours["properties"]) == set(theirs["properties"])
        same = ("task", "id", "timelimit", "root_id", "retries", "lang", "parent_id", "group", "eta", "expires")
        assert {k: ours["headers"][k] for k in same} == {k: theirs["headers"][k] for k in same}
        for k in ("correlation_id", "delivery_mode", "delivery_info", "priority", "body_encoding"):
            assert ours["properties"][k] == theirs["properties"][k], k


def test_priority_steps_name_kombus_lists() -> None:
    assert [list_key("inference", p) for p in (0, 3, 6)] == ["inference", "inference:3", "inference:6"]
