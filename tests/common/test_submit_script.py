"""The batch submit script on a real Redis: each job stored with its message or not at all, replays and quota
refusals stored and pushed nothing, a group's message names exactly its stored jobs, a retried call is a no-op."""
from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
from celery import Celery

from gpuq.common import broker_transport, keys
from gpuq.common.celery_config import celery_config, queue_lists
from gpuq.common.celery_message import MessageBuilder
from gpuq.common.jobs.registry import get_spec
from gpuq.common.records import body_hash
from gpuq.common.settings import Settings
from gpuq.common.submit_script import REPLAY, STORED, SUBMIT_BATCH, Entry, Message, batch_args, outcomes

NO_QUOTA = (0, 0.0, 1)


@pytest.fixture()
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture()
def builder(redis_url: str) -> MessageBuilder:
    broker_transport.install()
    app = Celery("script-test")
    settings = Settings(redis_url=redis_url, task_events=False)
    app.conf.update(celery_config(settings))
    return MessageBuilder(app, settings)


@pytest.fixture()
def queue() -> str:
    return f"script-test-{uuid.uuid4().hex[:8]}"


def _fields(kind: str = "inference", tenant: str = "script", priority: str = "normal") -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "tenant": tenant, "kind": kind, "model": "m", "queue": "inference",
            "priority": priority, "status": "queued", "inputs": "x", "params": {"task": "feature-extraction"},
            "attempts": 0, "cancel_requested": 0, "timings": {"submitted_at": time.time()}}


def _entry(fields: dict[str, Any], key: str | None = None, quota: tuple[int, float, int] = NO_QUOTA,
           webhook: bool = False) -> Entry:
    return Entry(fields, key, body_hash({"n": fields["inputs"]}) if key else "", quota, webhook)


def _run(r: redis.Redis, entries: list[Entry], messages: list[Message], topic: str = "") -> list[Any]:
    script_keys, argv = batch_args(entries, messages, topic)
    return outcomes(r.register_script(SUBMIT_BATCH)(keys=script_keys, args=argv))


def _messages(r: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for name in queue_lists(queue) for raw in r.lrange(name, 0, -1)]


def _job_ids(message: dict[str, Any]) -> list[str]:
    args = json.loads(base64.b64decode(message["body"]))[0]
    return args[0] if isinstance(args[0], list) else [args[0]]


def test_a_stored_job_has_its_record_index_event_key_counter_and_message(r: redis.Redis, builder: MessageBuilder,
                                                                          queue: str) -> None:
    fields = _fields(kind="synthetic")
    entry = _entry(fields, key=f"k-{fields['id']}", webhook=True)
    spec = get_spec("synthetic")
    before = int(r.hget(keys.stats(), "submitted|synthetic") or 0)
    [outcome] = _run(r, [entry], [Message([0], builder.single(fields["id"], spec, "normal", queue))])
    assert outcome.code == STORED
    record = r.hgetall(keys.job(fields["id"]))
    assert record["status"] == "queued" and json.loads(record["timings"]) == fields["timings"]
    assert r.zscore(keys.tenant_jobs("script"), fields["id"]) is not None
    assert [e[1]["type"] for e in r.xrange(keys.events(fields["id"]))] == ["queued"]
    assert json.loads(r.get(keys.idempotency("script", str(entry.idempotency_key))))["job_id"] == fields["id"]
    assert r.zscore(keys.webhook_jobs(), fields["id"]) is not None
    assert int(r.hget(keys.stats(), "submitted|synthetic") or 0) == before + 1
    [message] = _messages(r, queue)
    assert message["headers"]["task"] == "gpuq.run_job" and _job_ids(message) == [fields["id"]]


def test_a_retried_call_stores_and_pushes_nothing_twice(r: redis.Redis, builder: MessageBuilder, queue: str) -> None:
    fields = _fields()
    args = ([_entry(fields, key=f"k-{fields['id']}")],
            [Message([0], builder.single(fields["id"], get_spec("inference"), "normal", queue))])
    assert [o.code for o in _run(r, *args)] == [STORED]
    assert [o.code for o in _run(r, *args)] == [STORED]  # the same call again: a client retry after a lost reply
    assert len(_messages(r, queue)) == 1 and r.xlen(keys.events(fields["id"])) == 1


def test_a_group_message_names_exactly_the_jobs_stored(r: redis.Redis, builder: MessageBuilder, queue: str) -> None:
    spec = get_spec("inference")
    used = _fields()
    key = f"k-{used['id']}"
    _run(r, [_entry(used, key=key)], [Message([0], builder.single(used["id"], spec, "normal", queue))])
    r.delete(*queue_lists(queue))
    group = [_fields(), {**_fields(), "inputs": used["inputs"]}, _fields()]
    entries = [_entry(group[0]), _entry(group[1], key=key), _entry(group[2])]  # the second replays ``used``
    ids = [f["id"] for f in group]
    answers = _run(r, entries, [Message([0, 1, 2], builder.group(str(uuid.uuid4()), ids, spec, "normal", queue))])
    assert [a.code for a in answers] == [STORED, REPLAY, STORED]
    assert json.loads(answers[1].value)["job_id"] == used["id"]
    assert not r.exists(keys.job(ids[1]))
    [message] = _messages(r, queue)
    assert message["headers"]["task"] == "gpuq.run_group"
    assert _job_ids(message) == [ids[0], ids[2]]
    assert message["headers"]["argsrepr"] == repr(["2 jobs", ids[0]])
    assert message["properties"]["kwargsrepr"].endswith("'jobs': 2}")


def test_a_group_whose_first_job_replays_starts_its_body_with_the_next(r: redis.Redis, builder: MessageBuilder,
                                                                      queue: str) -> None:
    spec = get_spec("inference")
    used = _fields()
    key = f"k-{used['id']}"
    _run(r, [_entry(used, key=key)], [Message([0], builder.single(used["id"], spec, "normal", queue))])
    r.delete(*queue_lists(queue))
    group = [{**_fields(), "inputs": used["inputs"]}, _fields()]
    ids = [f["id"] for f in group]
    _run(r, [_entry(group[0], key=key), _entry(group[1])],
         [Message([0, 1], builder.group(str(uuid.uuid4()), ids, spec, "normal", queue))])
    [message] = _messages(r, queue)
    assert _job_ids(message) == [ids[1]] and message["headers"]["argsrepr"] == repr(["1 jobs", ids[1]])


def test_quota_refusals_store_nothing_and_messages_skip_them(r: redis.Redis, builder: MessageBuilder,
                                                             queue: str) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:6]}"
    group = [_fields(tenant=tenant) for _ in range(3)]
    ids = [f["id"] for f in group]
    entries = [_entry(f, quota=(2, 0.0, 1)) for f in group]  # two in flight at most
    answers = _run(r, entries, [Message([0, 1, 2], builder.group(str(uuid.uuid4()), ids, get_spec("inference"),
                                                                  "normal", queue))])
    assert [a.code for a in answers] == [STORED, STORED, 2]
    assert not r.exists(keys.job(ids[2])) and r.zcard(keys.in_flight(tenant)) == 2
    [message] = _messages(r, queue)
    assert _job_ids(message) == ids[:2]


def test_a_pointer_names_a_stored_job_and_is_not_set_for_a_replay_or_a_refusal(r: redis.Redis) -> None:
    tenant = f"pointer-{uuid.uuid4().hex[:6]}"
    stored, refused, used = _fields(tenant=tenant), _fields(tenant=tenant), _fields(tenant=tenant)
    key = f"k-{used['id']}"
    _run(r, [_entry(used, key=key)], [])
    replay = {**_fields(tenant=tenant), "inputs": used["inputs"]}
    pointers = {name: f"gpuq:test:pointer:{uuid.uuid4().hex}" for name in ("stored", "refused", "replay")}
    entries = [Entry(stored, None, "", (1, 0.0, 1), False, (pointers["stored"], 60)),
               Entry(refused, None, "", (1, 0.0, 1), False, (pointers["refused"], 60)),  # one in flight at most
               Entry(replay, key, body_hash({"n": replay["inputs"]}), NO_QUOTA, False, (pointers["replay"], 60))]
    assert [o.code for o in _run(r, entries, [])] == [STORED, 2, REPLAY]
    assert r.get(pointers["stored"]) == stored["id"] and 0 < r.ttl(pointers["stored"]) <= 60
    assert not r.exists(pointers["refused"]) and not r.exists(pointers["replay"])


def test_a_message_with_no_job_stored_is_not_pushed(r: redis.Redis, builder: MessageBuilder, queue: str) -> None:
    tenant = f"full-{uuid.uuid4().hex[:6]}"
    first = _fields(tenant=tenant)
    _run(r, [_entry(first, quota=(1, 0.0, 1))], [])
    late = _fields(tenant=tenant)
    answers = _run(r, [_entry(late, quota=(1, 0.0, 1))],
                   [Message([0], builder.single(late["id"], get_spec("inference"), "high", queue))])
    assert [a.code for a in answers] == [2] and _messages(r, queue) == []


def test_jobs_of_one_call_land_in_their_priority_lists(r: redis.Redis, builder: MessageBuilder, queue: str) -> None:
    spec = get_spec("synthetic")
    jobs = {p: _fields(kind="synthetic", priority=p) for p in ("low", "high", "normal")}
    entries = [_entry(f) for f in jobs.values()]
    messages = [Message([i], builder.single(f["id"], spec, p, queue)) for i, (p, f) in enumerate(jobs.items())]
    _run(r, entries, messages)
    lists = dict(zip(("high", "normal", "low"), queue_lists(queue)))
    for priority, fields in jobs.items():
        [raw] = r.lrange(lists[priority], 0, -1)
        assert _job_ids(json.loads(raw)) == [fields["id"]]
