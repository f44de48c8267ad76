"""Rendered Celery messages are the ones Celery's own send_task puts on a real Redis broker: same envelope,
protocol-2 headers, body, properties, priority list and task-sent event (only delivery tag, reply-to address
and the event's clock and time differ from one send to the next)."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from celery import Celery

from gpuq.common import broker_transport, dispatch
from gpuq.common.celery_config import celery_config, queue_lists
from gpuq.common.celery_message import SCRIPT_SLOTS, GroupParts, MessageBuilder
from gpuq.common.jobs.registry import get_spec
from gpuq.common.settings import Settings

VARYING = {"delivery_tag", "reply_to"}  # per message / per sending thread


@pytest.fixture()
def app(redis_url: str) -> Celery:
    broker_transport.install()
    app = Celery("message-test")
    app.conf.update(celery_config(Settings(redis_url=redis_url, task_events=True)))
    return app


@pytest.fixture()
def queue() -> str:
    return f"message-test-{uuid.uuid4().hex[:8]}"  # no worker consumes it


def _pop(r: redis.Redis, queue: str) -> tuple[str, dict[str, Any]]:
    """The one message on ``queue``'s lists: (list name, message)."""
    found = [(name, raw) for name in queue_lists(queue) for raw in r.lrange(name, 0, -1)]
    assert len(found) == 1, found
    for name in queue_lists(queue):
        r.delete(name)
    return found[0][0], json.loads(found[0][1])


def _comparable(message: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in message["properties"].items() if k not in VARYING}
    return {**message, "properties": props, "body": json.loads(base64.b64decode(message["body"]))}


class Events:
    """Task-sent events published on the broker while the block runs."""

    def __init__(self, redis_url: str) -> None:
        self.pubsub = redis.Redis.from_url(redis_url, decode_responses=True).pubsub()
        self.pubsub.psubscribe("*celeryev*")
        self.pubsub.get_message(timeout=1)

    def take(self) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = self.pubsub.get_message(timeout=0.5)
            if got and got["type"] == "pmessage":
                return str(got["channel"]), json.loads(got["data"])
        raise AssertionError("no task-sent event")


def _event_fields(message: dict[str, Any]) -> dict[str, Any]:
    fields = json.loads(base64.b64decode(message["body"]))
    return {k: v for k, v in fields.items() if k not in ("clock", "timestamp")}


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_a_single_message_is_what_send_task_stores(app: Celery, queue: str, redis_url: str, priority: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    spec, job_id = get_spec("synthetic"), uuid.uuid4().hex
    events = Events(redis_url)
    dispatch.publish(app, job_id, spec, priority, queue)
    stock_list, stock = _pop(r, queue)
    stock_channel, stock_event = events.take()
    rendered = MessageBuilder(app, Settings(redis_url=redis_url, task_events=True)).single(
        job_id, spec, priority, queue)
    assert rendered.list_key == stock_list
    assert _comparable(json.loads(rendered.envelope)) == _comparable(stock)
    ours = json.loads(rendered.event)
    assert _event_fields(ours) == _event_fields(stock_event)
    assert _comparable(ours)["properties"] == _comparable(stock_event)["properties"]
    assert MessageBuilder(app, Settings(redis_url=redis_url)).event_topic == stock_channel


def _finish(parts: GroupParts, ids: list[str], stored: list[int]) -> str:
    """What the submit script makes of a group's parts when the jobs at ``stored`` were stored."""
    body = [parts.body_prefix] + [(parts.first_segments if n == 0 else parts.later_segments)[i]
                                  for n, i in enumerate(stored)] + [parts.body_suffix]
    fill = {SCRIPT_SLOTS["count"]: str(len(stored)), SCRIPT_SLOTS["first"]: ids[stored[0]],
            SCRIPT_SLOTS["body"]: "".join(body)}
    return "".join(fill.get(piece, piece) for piece in parts.pieces)


def test_a_group_message_is_what_send_task_stores(app: Celery, queue: str, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    spec, ids = get_spec("inference"), [uuid.uuid4().hex for _ in range(3)]
    dispatch.publish_group(app, ids, spec, "low", queue)
    stock_list, stock = _pop(r, queue)
    parts = MessageBuilder(app, Settings(redis_url=redis_url)).group(stock["headers"]["id"], ids, spec, "low", queue)
    assert parts.list_key == stock_list
    assert _comparable(json.loads(_finish(parts, ids, [0, 1, 2]))) == _comparable(stock)


def test_a_group_that_lost_jobs_names_only_the_stored_ones(app: Celery, queue: str, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    spec, ids = get_spec("inference"), [uuid.uuid4().hex for _ in range(3)]
    dispatch.publish_group(app, [ids[1], ids[2]], spec, "normal", queue)
    _, stock = _pop(r, queue)
    parts = MessageBuilder(app, Settings(redis_url=redis_url)).group(stock["headers"]["id"], ids, spec, "normal",
                                                                     queue)
    assert _comparable(json.loads(_finish(parts, ids, [1, 2]))) == _comparable(stock)


def test_templates_are_built_once_under_concurrent_first_use(app: Celery, redis_url: str) -> None:
    builder = MessageBuilder(app, Settings(redis_url=redis_url))
    spec = get_spec("synthetic")
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(builder.single(uuid.uuid4().hex, spec, "normal",
                                                                          "q").envelope)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and all(json.loads(m)["headers"]["task"] == "gpuq.run_job" for m in out)
