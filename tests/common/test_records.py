"""The job record store against a real Redis: the submit, claim and transition scripts, and answers."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from gpuq.common import keys
from gpuq.common.errors import NotFound
from gpuq.common.records import Answer, Fence, JobStore, answer_for, answers_json, json_text, to_record


@pytest.fixture()
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield JobStore(client)
    client.close()


def _fields(tenant: str = "records-t") -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "tenant": tenant, "kind": "inference", "model": "m", "queue": "inference",
            "status": "queued", "priority": "normal", "params": {"task": "fill-mask", "note": "ünïcode \"q\""},
            "inputs": ["a [MASK] b", ""], "attempts": 0, "timings": {"submitted_at": time.time()},
            "progress": None, "artifacts": [], "webhook": None}


def _events(store: JobStore, job_id: str) -> list[str]:
    return [fields["type"] for _, fields in store.r.xrange(keys.events(job_id))]


def test_submit_stores_every_field_and_the_queued_event(store: JobStore) -> None:
    fields = _fields()
    assert store.create(fields, None, "") is None
    raw = store.get_raw(fields["id"])
    assert raw is not None
    assert raw["params"] == fields["params"] and raw["inputs"] == fields["inputs"]
    assert raw["progress"] is None and raw["webhook"] is None and raw["artifacts"] == []
    assert _events(store, fields["id"]) == ["queued"]
    assert store.r.ttl(keys.job(fields["id"])) > 0


def test_submit_with_a_known_idempotency_key_returns_the_first_job(store: JobStore) -> None:
    key = uuid.uuid4().hex
    first, second = _fields(), _fields()
    assert store.create(first, key, "h1") is None
    assert store.create(second, key, "h1") == first["id"]
    assert store.get_raw(second["id"]) is None


def test_claim_and_transitions_apply_only_from_allowed_states(store: JobStore) -> None:
    fields = _fields()
    store.create(fields, None, "")
    job_id = fields["id"]
    timings = {**fields["timings"], "started_at": time.time()}
    # A queue of its own: a job left in a real queue's running set would count as load in the API tests.
    claims = [(job_id, "records-test", {"status": "running", "worker": "w1", "attempts": 1, "timings": timings},
               {"worker": "w1"})]
    assert store.claim_fresh(claims, "w1", "node-1", 60_000) == ["claimed"]
    assert store.claim_fresh(claims, "w2", "node-2", 60_000) == ["running"]
    assert store.r.zscore(keys.running("records-test"), job_id) is not None
    assert store.r.sismember(keys.worker_jobs("node-1"), job_id)

    refused = store.transition(job_id, ["queued"], {"status": "cancelled"}, "cancelled")
    assert (refused.applied, refused.previous) == (False, "running")
    before = int(store.r.hget(keys.stats(), "failed|inference|OutOfMemory") or 0)
    error = {"type": "OutOfMemory", "message": "no room", "retryable": False}
    done = store.transition(job_id, ["queued", "running"], {"status": "failed", "error": error}, "failed",
                            {"error": error})
    assert (done.applied, done.previous) == (True, "running")
    assert int(store.r.hget(keys.stats(), "failed|inference|OutOfMemory") or 0) == before + 1
    assert store.get(job_id).error is not None and store.get(job_id).error.type == "OutOfMemory"
    assert _events(store, job_id) == ["queued", "started", "failed"]


def test_transition_without_fields_only_appends_the_event(store: JobStore) -> None:
    fields = _fields()
    store.create(fields, None, "")
    done = store.transition(fields["id"], ["queued"], {}, "log", {"message": "hello"})
    assert done.applied and store.get(fields["id"]).status == "queued"
    assert _events(store, fields["id"]) == ["queued", "log"]


@pytest.mark.parametrize("result", [[0.1234567, -2.5e-05, 3.0] * 128, {"label": "POSITIVE", "score": 0.99},
                                    None])
def test_an_answer_is_the_record_with_its_stored_result(store: JobStore, result: Any) -> None:
    fields = _fields()
    store.create(fields, None, "")
    encoded = {"result": orjson.dumps(result).decode()} if result is not None else None
    store.transition(fields["id"], ["queued"], {"status": "succeeded"}, "completed", encoded=encoded)
    raw = store.r.hgetall(keys.job(fields["id"]))
    answer = answer_for(raw, fields["id"], fields["tenant"])
    assert isinstance(answer, Answer)
    assert json.loads(answer.json()) == json.loads(store.get(fields["id"]).model_dump_json())
    assert json.loads(answers_json([answer, answer]))["jobs"][1]["result"] == result


def test_an_answer_for_another_tenant_or_a_missing_job_is_not_found(store: JobStore) -> None:
    fields = _fields()
    store.create(fields, None, "")
    raw = store.r.hgetall(keys.job(fields["id"]))
    with pytest.raises(NotFound):
        answer_for(raw, fields["id"], "someone-else")
    with pytest.raises(NotFound):
        answer_for({}, "nope", fields["tenant"])
    with pytest.raises(NotFound):
        store.get_fields(fields["id"], "someone-else")


def test_json_text_falls_back_for_what_orjson_refuses() -> None:
    assert json.loads(json_text({"big": 2 ** 70})) == {"big": 2 ** 70}
    assert json.loads(json_text({1: "int key"})) == {"1": "int key"}
    assert to_record({**_fields(), "cancel_requested": "1", "attempts": "2"}).cancel_requested


@pytest.fixture()
def own_store(tmp_path: Any) -> Iterator[JobStore]:
    """A store on a Redis of its own (this test flushes its scripts)."""
    from gpuq.common.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield JobStore(client)
    client.close()
    server.stop()


def test_transitions_sent_with_other_commands_survive_a_redis_that_lost_its_scripts(own_store: JobStore) -> None:
    store = own_store
    first, second = _fields(), _fields()
    store.create(first, None, "")
    store.create(second, None, "")
    store.r.script_flush()  # a restarted Redis: every EVALSHA answers NOSCRIPT
    done = store.transition(first["id"], ["queued"], {"status": "running"}, "started", {},
                            after=lambda pipe: pipe.sadd("records-after", "one"))
    assert done.applied and done.previous == "queued"
    store.r.script_flush()
    many = store.transition_many([(second["id"], ["queued"], {"status": "running"}, "started", {}, None)],
                                 after=lambda pipe: pipe.sadd("records-after", "two"))
    assert [(t.applied, t.previous) for t in many] == [(True, "queued")]
    assert store.r.smembers("records-after") == {"one", "two"}
    assert _events(store, first["id"]) == _events(store, second["id"]) == ["queued", "started"]
    assert store.r.ttl(keys.events(first["id"])) > 0  # the stream keeps the TTL it got with the record


def _claimed(store: JobStore, attempt: int, worker: str) -> str:
    """A job running its ``attempt``-th attempt on ``worker`` (listed, and leased by it), as a claim leaves it."""
    fields = _fields()
    store.create(fields, None, "")
    job_id = fields["id"]
    store.transition(job_id, ["queued", "running"], {"status": "running", "worker": worker, "attempts": attempt},
                     "started", {"worker": worker, "attempt": attempt})
    store.r.zadd(keys.running("inference"), {job_id: time.time()})
    store.r.sadd(keys.worker_jobs(worker), job_id)
    store.r.set(keys.lease(job_id), worker, px=60_000)
    return job_id


def test_a_stale_attempts_outcome_is_refused_and_leaves_the_next_attempts_entries(store: JobStore) -> None:
    job_id = _claimed(store, 1, "node-a:1")
    # Attempt 1's lease lapsed; attempt 2 claimed the job on another worker and holds the lease now.
    store.r.set(keys.lease(job_id), "node-b:2", px=60_000)
    store.transition(job_id, ["queued", "running"], {"status": "running", "worker": "node-b:2", "attempts": 2},
                     "started", {"worker": "node-b:2", "attempt": 2})
    store.r.sadd(keys.worker_jobs("node-b:2"), job_id)
    late = Fence(1, unlist=("inference", "node-a:1"), release="node-a:1")
    refused = store.transition(job_id, ["queued", "running"], {"status": "succeeded", "worker": "node-a:1"},
                               "completed", {"attempt": 1}, fence=late)
    assert (refused.applied, refused.previous, refused.fenced) == (False, "running", True)
    requeue = store.transition(job_id, ["running"], {"status": "queued"}, "log", {"message": "late"}, fence=late)
    assert requeue.fenced and not requeue.applied
    record = store.get_raw(job_id)
    assert record is not None and (record["status"], record["worker"]) == ("running", "node-b:2")
    assert store.r.zscore(keys.running("inference"), job_id) is not None  # the next attempt's entries stay
    assert store.r.get(keys.lease(job_id)) == "node-b:2"
    assert _events(store, job_id) == ["queued", "started", "started"]

    current = Fence(2, unlist=("inference", "node-b:2"), release="node-b:2")
    done = store.transition(job_id, ["queued", "running"], {"status": "succeeded"}, "completed", {"attempt": 2},
                            fence=current)
    assert (done.applied, done.previous, done.fenced) == (True, "running", False)
    assert store.r.zscore(keys.running("inference"), job_id) is None
    assert not store.r.sismember(keys.worker_jobs("node-b:2"), job_id)
    assert store.r.get(keys.lease(job_id)) is None
    assert _events(store, job_id) == ["queued", "started", "started", "completed"]


def test_a_fenced_write_is_refused_once_the_job_was_requeued_without_it(store: JobStore) -> None:
    job_id = _claimed(store, 1, "node-a:1")
    store.transition(job_id, ["running"], {"status": "queued"}, "log", {"message": "lease expired"})  # sweeper
    late = store.transition(job_id, ["queued", "running"], {"status": "failed"}, "failed", {}, fence=Fence(1))
    assert (late.applied, late.previous, late.fenced) == (False, "queued", True)
    assert store.get(job_id).status == "queued"


def test_an_unfenced_cancel_still_applies(store: JobStore) -> None:
    job_id = _claimed(store, 2, "node-a:1")
    running = store.request_cancel(job_id, "records-t")
    assert running.status == "running" and running.cancel_requested
    queued = _fields()
    store.create(queued, None, "")
    assert store.request_cancel(queued["id"], "records-t").status == "cancelled"


def test_progress_and_field_updates_are_fenced_by_the_attempt(store: JobStore) -> None:
    job_id = _claimed(store, 2, "node-a:1")
    pipe = store.r.pipeline(transaction=False)
    stale = store.queue_progress(pipe, job_id, '{"done": 9}', 1)
    current = store.queue_progress(pipe, job_id, '{"done": 1}', 2)
    unfenced = store.queue_progress(pipe, job_id, '{"done": 2}', None)
    assert [read(answer) for read, answer in zip((stale, current, unfenced), pipe.execute(raise_on_error=False))] == [False, True, True]
    assert store.get(job_id).progress == {"done": 2}
    assert _events(store, job_id) == ["queued", "started", "progress", "progress"]
    assert not store.update(job_id, {"resolved": {"stale": 1}}, fence=Fence(1))
    assert store.update(job_id, {"resolved": {"current": 2}}, fence=Fence(2))
    assert store.get_raw(job_id)["resolved"] == {"current": 2}  # type: ignore[index]


def test_a_side_effect_marker_needs_the_lease_too(store: JobStore) -> None:
    job_id = _claimed(store, 1, "node-a:1")
    marker = Fence(1, holder="node-a:1")
    assert store.transition(job_id, ["running"], {}, "log", {"message": "pushing"}, fence=marker).applied
    store.r.delete(keys.lease(job_id))  # lapsed: the sweeper may requeue it any moment
    lapsed = store.transition(job_id, ["running"], {}, "log", {"message": "pushing"}, fence=marker)
    assert lapsed.fenced and not lapsed.applied
