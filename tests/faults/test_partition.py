"""A network partition, not a kill: a worker cut off from Redis keeps running its job while its lease lapses and
another worker takes the job over. When the partition heals, the first attempt must write nothing more (its
late progress and outcome are refused by the attempt they carry), and the job completes once, as the second
attempt's.

The partitioned worker runs in a network namespace of its own, joined to the host by a veth pair; Redis listens
on the host end. The partition is the host end of the pair set down: the worker's connections stay open and
hang (no reset), as across a real partition, and carry on where they were once it is set up again.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpuq.common import keys
from tests.faults.conftest import Stack, wait_job
from tests.support.processes import ROOT, Service, wait_for, worker_alive

# Six 3 s steps: long enough for the takeover to happen while the first attempt is still mid-job.
JOB = {"kind": "synthetic", "model": "partition", "params": {"steps": 6, "step_ms": 3000, "mode": "sleep"}}
HOST_IP, WORKER_IP = "10.213.7.1", "10.213.7.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Netns:
    """A network namespace joined to the host by a veth pair (``host`` end on the host, ``inside`` in it)."""

    name: str
    host: str
    inside: str

    def cut(self) -> None:
        _ip("link", "set", self.host, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host, "up")


@pytest.fixture()
def netns() -> Iterator[Netns]:
    """A namespace with the worker end of a veth pair at ``WORKER_IP``; removed, with its link, even on failure."""
    tag = uuid.uuid4().hex[:6]
    ns = Netns(f"gpuq-part-{tag}", f"gqh{tag}", f"gqn{tag}")
    try:
        added = _ip("netns", "add", ns.name, check=False)
        if added.returncode != 0:
            pytest.skip(f"network namespaces unavailable here: {added.stderr.strip()}")
        _ip("link", "add", ns.host, "type", "veth", "peer", "name", ns.inside)
        _ip("link", "set", ns.inside, "netns", ns.name)
        _ip("addr", "add", f"{HOST_IP}/30", "dev", ns.host)
        _ip("link", "set", ns.host, "up")
        inside = ("netns", "exec", ns.name, "ip")
        _ip(*inside, "addr", "add", f"{WORKER_IP}/30", "dev", ns.inside)
        _ip(*inside, "link", "set", ns.inside, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield ns
    finally:
        _ip("link", "del", ns.host, check=False)  # takes its peer with it
        _ip("netns", "del", ns.name, check=False)


class NetnsWorker(Service):
    """A gpuq worker (prefork, one child) started inside ``netns``, its output in a log file."""

    def __init__(self, netns: Netns, env: dict[str, str], log_dir: Path, name: str) -> None:  # noqa: D107
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns.name, sys.executable, "-m", "gpuq.cli.main", "worker",
             "--hostname", f"{name}@%h"],
            env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)


def _events(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    return [{"type": f["type"], "data": json.loads(f.get("data") or "{}")}
            for _, f in stack.r.xrange(keys.events(job_id))]


def _record(stack: Stack, job_id: str) -> dict[str, str]:
    return dict(stack.r.hgetall(keys.job(job_id)))


def test_partitioned_worker_never_writes_over_the_attempt_that_took_its_job_over(
        stack: Stack, netns: Netns, outcome: Any) -> None:
    stack.start_redis("--bind", "127.0.0.1", HOST_IP, "--protected-mode", "no")
    stack.start_api()
    inside_url = f"redis://{HOST_IP}:{stack.redis_port}/0"
    cut_off = NetnsWorker(netns, {**stack.env, "GPUQ_REDIS_URL": inside_url}, stack.dir, "cutoff")
    stack.workers["cutoff"] = cut_off  # stopped with the stack
    wait_for(lambda: worker_alive(stack.env["GPUQ_REDIS_URL"], "cutoff@"), 90, "worker in the namespace")
    with stack.client() as c:
        job_id = c.post("/v1/jobs", json=JOB).json()["id"]
        running = wait_job(c, job_id, ("running",), timeout=60)
        assert running["worker"].startswith("cutoff@")
        stack.start_worker("survivor")
        wait_for(lambda: (_record(stack, job_id).get("progress") or "").startswith('{"done":'), 30, "progress")
        assert _record(stack, job_id)["status"] == "running", "the job ended before the partition"
        netns.cut()
        cut_at = time.monotonic()
        try:
            # The lease lapses (3 s), the sweeper requeues the job and the survivor claims it: attempt 2.
            wait_for(lambda: _record(stack, job_id).get("attempts") == "2", 60, "the takeover")
            claimed = _record(stack, job_id)
            time.sleep(1)
        finally:
            netns.heal()
        partition_s = time.monotonic() - cut_at
        assert claimed["worker"].startswith("survivor@")
        done = wait_job(c, job_id, timeout=120)
    events = _events(stack, job_id)
    types = [e["type"] for e in events]
    second = max(i for i, t in enumerate(types) if t == "started")
    after = events[second + 1:]
    assert events[second]["data"]["attempt"] == 2 and events[second]["data"]["worker"].startswith("survivor@")
    assert [e["type"] for e in after] == ["progress"] * 6 + ["completed"], after
    assert [e["data"]["done"] for e in after[:6]] == [1, 2, 3, 4, 5, 6]  # the second attempt's only
    record = _record(stack, job_id)
    assert done["status"] == "succeeded" and done["result"]["attempt"] == 2 and done["attempts"] == 2
    assert record["worker"].startswith("survivor@") and json.loads(record["progress"])["done"] == 6
    assert types.count("completed") == 1
    assert stack.r.zscore(keys.running("inference"), job_id) is None and stack.r.get(keys.lease(job_id)) is None
    # The first attempt noticed, once its late writes were refused, and wrote nothing more.
    wait_for(lambda: "no longer holds the job" in cut_off.log(), 60, "the cut-off attempt's refused write")
    assert cut_off.alive(), "a partitioned worker keeps running"
    outcome.record("worker cut off from Redis by a network partition (own netns, veth down) longer than its "
                   "lease (3 s), still running its job",
                   "another worker takes the job over; the cut-off attempt writes nothing after the takeover; "
                   "one completion, the second attempt's",
                   f"partition {partition_s:.1f} s; taken over by survivor (attempt 2); completed events="
                   f"{types.count('completed')}, result attempt={done['result']['attempt']}; after the takeover "
                   f"only attempt 2's events ({len(after)}); the cut-off worker's late writes refused and logged, "
                   "process still running")
