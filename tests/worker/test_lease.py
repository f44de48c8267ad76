"""Job leases against a real Redis: one call renews or releases a whole group's leases, and only its own."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from gpuq.common import keys
from gpuq.worker.lease import Lease, Leases, holder


@pytest.fixture()
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _ids(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def test_a_lease_is_exclusive_and_released_by_its_holder(r: redis.Redis) -> None:
    job_id = _ids(1)[0]
    mine, theirs = Lease(r, job_id, "w1", 30), Lease(r, job_id, "w2", 30)
    assert mine.acquire() and not theirs.acquire()
    assert holder(r, job_id) == "w1"
    theirs.release()  # not theirs to drop
    assert holder(r, job_id) == "w1"
    mine.release()
    assert holder(r, job_id) is None


def test_group_leases_are_renewed_and_released_together_and_a_lost_one_is_dropped(r: redis.Redis) -> None:
    ids = _ids(5)
    for job_id in ids:
        r.set(keys.lease(job_id), "w1", px=600)
    r.set(keys.lease(ids[2]), "w2", px=60_000)  # taken over by another worker
    leases = Leases(r, ids, "w1", 0.6)  # renewed every 0.2 s
    leases.renew()
    time.sleep(1.0)  # past the original TTL: only renewal keeps them
    assert [holder(r, j) for j in ids] == ["w1", "w1", "w2", "w1", "w1"]
    assert keys.lease(ids[2]) not in leases.keys
    leases.release()
    assert [holder(r, j) for j in ids] == [None, None, "w2", None, None]


def test_one_thread_renews_every_lease_of_the_process(r: redis.Redis) -> None:
    import threading

    ids = _ids(20)
    held = [Lease(r, job_id, "w1", 0.6) for job_id in ids]
    assert all(lease.acquire() for lease in held)
    time.sleep(1.0)  # past the TTL: only renewal keeps them
    assert [holder(r, j) for j in ids] == ["w1"] * 20
    assert sum(t.name == "gpuq-lease" for t in threading.enumerate()) == 1
    for lease in held[:10]:
        lease.release()
    time.sleep(0.8)
    assert [holder(r, j) for j in ids] == [None] * 10 + ["w1"] * 10  # the released ones stay released
    for lease in held[10:]:
        lease.release()
    assert [holder(r, j) for j in ids] == [None] * 20


def test_a_release_carries_other_commands_in_its_round_trip_and_a_second_release_is_a_no_op(
        r: redis.Redis) -> None:
    job_id, marker = _ids(1)[0], f"lease-after-{uuid.uuid4().hex}"
    lease = Lease(r, job_id, "w1", 30)
    assert lease.acquire()
    lease.release(after=lambda pipe: pipe.set(marker, "sent", ex=60))
    assert holder(r, job_id) is None and r.get(marker) == "sent"
    r.set(keys.lease(job_id), "w2", px=60_000)  # somebody else's now
    lease.release()
    assert holder(r, job_id) == "w2"
