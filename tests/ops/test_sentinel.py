"""Redis Sentinel for real: a primary, a replica and two sentinels on loopback; the whole stack (API and
worker, broker and job records) uses a ``sentinel://`` URL list, the primary is killed, and jobs keep
flowing: new jobs submitted after the failover complete, and the job in flight completes exactly once."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gpuq.common.embedded_redis import EmbeddedRedis, free_port, redis_server_binary
from tests.conftest import KEY_A
from tests.support.jobs import sse_events, wait_status
from tests.support.processes import Service, start_api, start_worker, wait_for, worker_alive

MASTER = "gpuq-test"


class SentinelServer:
    """``redis-server --sentinel`` with a short down-after and failover timeout."""

    def __init__(self, workdir: Path, master_port: int) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "sentinel.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 3000\n"
                        f"sentinel parallel-syncs {MASTER} 1\n")
        self.log = (workdir / "sentinel.log").open("wb")
        self.proc = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.client().ping(), 10, "sentinel PING")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def master_port(self) -> int:
        return int(self.client().sentinel_get_master_addr_by_name(MASTER)[1])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class SentinelCluster:
    """Primary + replica + two sentinels."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gpuq-sentinel-"))
        self.primary = EmbeddedRedis(self.dir / "primary").start()
        self.replica = EmbeddedRedis(self.dir / "replica",
                                     extra=["--replicaof", "127.0.0.1", str(self.primary.port)]).start()
        self.sentinels = [SentinelServer(self.dir / f"sentinel{i}", self.primary.port) for i in range(2)]
        wait_for(self._ready, 30, "replica in sync and sentinels aware of it and of each other", interval=0.2)

    def _ready(self) -> bool:
        info = redis.Redis(port=self.replica.port).info("replication")
        known = [s.client().execute_command("SENTINEL", "REPLICAS", MASTER) for s in self.sentinels]
        peers = [s.client().execute_command("SENTINEL", "SENTINELS", MASTER) for s in self.sentinels]
        return info.get("master_link_status") == "up" and all(known) and all(peers)

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{s.port}/0" for s in self.sentinels)

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        self.replica.stop()
        self.primary.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def cluster() -> Iterator[SentinelCluster]:
    c = SentinelCluster()
    yield c
    c.stop()


def _submit_retrying(client: httpx.Client, body: dict[str, object], timeout: float = 30) -> str:
    """Submit, retrying 503 (retryable: the API's answer while the broker's primary is being replaced)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.post("/v1/jobs", json=body)
        if resp.status_code == 202 or time.monotonic() > deadline:
            assert resp.status_code == 202, resp.text
            return str(resp.json()["id"])
        assert resp.status_code == 503 and resp.json()["error"]["retryable"], resp.text
        time.sleep(0.2)


def test_jobs_keep_flowing_across_a_sentinel_failover(cluster: SentinelCluster, service_env: dict[str, str],
                                                      log_dir: Path) -> None:
    env = {**service_env, "GPUQ_REDIS_URL": cluster.url, "GPUQ_REDIS_SENTINEL_MASTER": MASTER,
           "GPUQ_LEASE_TTL_S": "3", "GPUQ_SWEEP_INTERVAL_S": "1", "GPUQ_WORKER_HEARTBEAT_S": "1",
           "GPUQ_WORKER_SOFT_SHUTDOWN_S": "1", "GPUQ_DATA_DIR": str(cluster.dir),
           "GPUQ_ARTIFACT_DIR": str(cluster.dir / "artifacts")}
    worker = start_worker(env, log_dir, "sentinel")
    api: Service | None = None
    try:
        wait_for(lambda: worker_alive(cluster.primary.url, "sentinel@"), 90, "worker heartbeat via sentinel")
        api, url = start_api(env, log_dir)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as c:
            quick = {"kind": "synthetic", "model": "none", "params": {"steps": 1}}
            assert wait_status(c, _submit_retrying(c, quick))["status"] == "succeeded"
            in_flight = _submit_retrying(c, {"kind": "synthetic", "model": "none",
                                             "params": {"steps": 40, "step_ms": 100}})
            wait_for(lambda: (c.get(f"/v1/jobs/{in_flight}").json().get("progress") or {}).get("done", 0)
                     >= 3, 30, "the long job to make progress")

            cluster.primary.proc.kill()  # the primary is gone for good
            wait_for(lambda: cluster.sentinels[0].master_port() == cluster.replica.port, 30,
                     "sentinel to promote the replica")
            after = [_submit_retrying(c, quick) for _ in range(3)]
            for job_id in after:
                assert wait_status(c, job_id, timeout=60)["status"] == "succeeded"
            done = wait_status(c, in_flight, timeout=90)
            events = [e["event"] for e in sse_events(c, in_flight)]
        assert done["status"] == "succeeded" and events.count("completed") == 1, (done, events)
        assert redis.Redis(port=cluster.replica.port).info("replication")["role"] == "master"
    finally:
        if api:
            api.stop()
        worker.stop(timeout=20)
