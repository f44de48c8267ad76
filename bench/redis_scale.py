"""What Redis sees as the worker count grows: connections, commands/s, CPU, memory, event volume, latency.

Real workers for small counts, and a simulation for large ones, measured the same way on a private
redis-server:

- ``real N``: N real ``gpuq worker`` processes (prefork, ``-c 1``, ``-E``, no gossip, no mingle).
- ``sim N``: N simulated workers in this process, one thread each, speaking to Redis exactly as a worker
  does, with the same libraries: a kombu consumer polling the job queues with BRPOP (1 s timeout) on its
  own connection, a pidbox (remote control) node subscribed to the broadcast fan-out and answering
  ``ping`` and inspect calls, a Celery event dispatcher sending ``worker-heartbeat`` every 2 s and the task
  events of every job, gpuq's heartbeat and recovery sweeper on their own client, and gpuq's real job
  code (``gpuq.worker.runner.run_job``) on another, as a pool child would. ``rc-off`` drops the pidbox node
  (``worker_enable_remote_control = False``).

Per configuration: connected clients (the bench's own subtracted), commands/s and Redis CPU % while idle
and while loaded (a steady stream of short synthetic jobs), PUBLISH/s (task events, heartbeats,
broadcasts), Redis memory, p50/p99 enqueue->start, and one ``inspect().ping()`` broadcast (replies, time).

    python -m bench.redis_scale [--real 1,4] [--sim 4,16,100] [--rate 10] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpuq.common.embedded_redis import EmbeddedRedis  # noqa: E402

RESULTS = ROOT / "bench" / "results"
INSPECT_METHODS = ("ping", "stats", "active_queues", "registered", "scheduled", "active", "reserved",
                   "revoked", "conf")


class SimWorker:
    """One simulated gpuq worker: its Redis connections and traffic, driven by one thread."""

    def __init__(self, index: int, url: str, remote_control: bool, stop: threading.Event) -> None:
        import redis

        from bench.scaleout import _producer

        self.hostname, self.url, self.stop = f"sim{index}@{socket.gethostname()}", url, stop
        self.remote_control = remote_control
        self.app = _producer(url)
        self.parent_redis = redis.Redis.from_url(url, decode_responses=True)  # heartbeat + sweeper
        self.child_redis = redis.Redis.from_url(url, decode_responses=True)  # job records (pool child)
        self.processed = 0
        self.thread = threading.Thread(target=self._run, name=self.hostname, daemon=True)

    def _run(self) -> None:
        import kombu

        from gpuq.common.queues import known_queues

        _TLS.client = self.child_redis
        with self.app.connection_for_read() as conn, self.app.connection_for_write() as events_conn:
            self.dispatcher = self.app.events.Dispatcher(events_conn, hostname=self.hostname, enabled=True)
            consumer = kombu.Consumer(conn.channel(), queues=[kombu.Queue(q) for q in known_queues()],
                                      callbacks=[self._on_message], accept=["json"])
            consumer.qos(prefetch_count=1)
            consumer.consume()
            if self.remote_control:
                handlers = {m: (lambda state, **kw: {"ok": "pong"}) for m in INSPECT_METHODS}
                self.app.control.mailbox(conn).Node(self.hostname, handlers=handlers,
                                                    channel=conn.channel()).listen()
            self._loop(conn)
            self.dispatcher.send("worker-offline")

    def _loop(self, conn: Any) -> None:
        next_event = next_beat = next_sweep = 0.0
        while not self.stop.is_set():
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
            now = time.monotonic()
            if now >= next_event:  # Celery's worker-heartbeat, every 2 s
                next_event = now + 2
                self.dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=self.processed)
            if now >= next_beat:  # gpuq's heartbeat (worker/signals.py), every GPUQ_WORKER_HEARTBEAT_S
                next_beat = now + 5
                self._gpuq_heartbeat()
            if now >= next_sweep:
                next_sweep = now + 10
                from gpuq.worker.sweeper import sweep_once

                sweep_once(self.app, self.parent_redis)

    def _gpuq_heartbeat(self) -> None:
        from gpuq.common import keys

        pipe = self.parent_redis.pipeline(transaction=False)
        pipe.zadd(keys.workers(), {self.hostname: time.time()})
        pipe.set(keys.worker_info(self.hostname), json.dumps({"node": self.hostname}), ex=60)
        pipe.execute()

    def _on_message(self, body: Any, message: Any) -> None:
        from gpuq.worker.runner import run_job

        job_id = message.headers["id"]
        self.dispatcher.send("task-received", uuid=job_id, name=message.headers["task"], args=str(body[0]))
        self.dispatcher.send("task-started", uuid=job_id)
        self.dispatcher.send("task-progress", uuid=job_id, result="progress")  # the first one is always sent
        start = time.monotonic()
        result = run_job(job_id)
        self.dispatcher.send("task-succeeded", uuid=job_id, result=repr(result),
                             runtime=time.monotonic() - start)
        message.ack()
        self.processed += 1


_TLS = threading.local()


def _thread_local_redis() -> None:
    """Give every simulated worker its own gpuq client, as every real pool child has."""
    from gpuq.worker import jobstore

    jobstore.get_redis = lambda: _TLS.client  # type: ignore[assignment]


def redis_sample(r: Any) -> dict[str, float]:
    """Counters to diff: commands, CPU seconds, publishes."""
    stats, cpu, cmds = r.info("stats"), r.info("cpu"), r.info("commandstats")
    return {"t": time.monotonic(), "commands": stats["total_commands_processed"],
            "cpu": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
            "publish": cmds.get("cmdstat_publish", {}).get("calls", 0)}


def rates(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    dt = b["t"] - a["t"]
    return {"ops_per_s": (b["commands"] - a["commands"]) / dt, "cpu_pct": 100 * (b["cpu"] - a["cpu"]) / dt,
            "publish_per_s": (b["publish"] - a["publish"]) / dt}


def measure(url: str, label: str, n: int, start: Any, stop_workers: Any,
            args: argparse.Namespace) -> dict[str, Any]:
    """Start the workers, then measure idle, loaded and a broadcast; always stop them."""
    import redis

    from bench.scaleout import _producer, submit, wait_done

    r = redis.Redis.from_url(url, decode_responses=True)
    app = _producer(url)
    with app.producer_or_acquire() as _:
        pass  # open the bench's own producer connection before the baseline
    baseline_clients = r.info("clients")["connected_clients"]
    start()
    try:
        time.sleep(args.warmup)
        clients = r.info("clients")["connected_clients"] - baseline_clients
        a = redis_sample(r)
        time.sleep(args.seconds)
        idle = rates(a, redis_sample(r))
        ids: list[str] = []
        a = redis_sample(r)
        t_end = time.monotonic() + args.seconds
        while time.monotonic() < t_end:
            tick = time.monotonic()
            ids += submit(url, 1, {"steps": 1, "step_ms": 5, "mode": "sleep"})
            time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - tick)))
        loaded = rates(a, redis_sample(r))
        records = wait_done(url, ids, timeout=300)
        waits = sorted(rec["timings"]["queue_wait_ms"] for rec in records)
        t0 = time.monotonic()
        replies = app.control.inspect(timeout=1.0).ping() or {}
        broadcast_s = time.monotonic() - t0
        memory = r.info("memory")["used_memory"]
    finally:
        stop_workers()
    return {"label": label, "workers": n, "clients": clients, "clients_per_worker": clients / n,
            "idle": idle, "loaded": loaded, "loaded_jobs_per_s": args.rate,
            "p50_wait_ms": statistics.median(waits), "p99_wait_ms": waits[int(0.99 * (len(waits) - 1))],
            "ping_replies": len(replies), "ping_broadcast_s": broadcast_s, "redis_used_memory": memory}


def real_config(url: str, tmp: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """``n`` real gpuq worker processes."""
    import redis

    from tests.support.processes import start_worker, wait_for

    env = {**os.environ, "GPUQ_WORKER_METRICS_PORT": "0", "GPUQ_WORKER_SOFT_SHUTDOWN_S": "1"}
    workers: list[Any] = []
    r = redis.Redis.from_url(url, decode_responses=True)
    r.ping()  # open the bench's connection before the baseline client count
    tag = f"real{n}-{int(time.time())}"

    def start() -> None:
        workers.extend(start_worker(env, tmp, f"{tag}w{i}") for i in range(n))
        wait_for(lambda: sum(1 for m in r.zrange("gpuq:workers", 0, -1) if m.startswith(tag)) == n, 300,
                 f"{n} workers")

    def stop() -> None:
        for w in workers:
            w.stop(timeout=30)
        r.delete("gpuq:workers")
    return measure(url, f"real {n}", n, start, stop, args)


def sim_config(url: str, n: int, remote_control: bool, args: argparse.Namespace) -> dict[str, Any]:
    """``n`` simulated workers in this process."""
    import redis

    stop = threading.Event()
    sims: list[SimWorker] = []

    def start() -> None:
        sims.extend(SimWorker(i, url, remote_control, stop) for i in range(n))
        for s in sims:
            s.thread.start()

    def stop_all() -> None:
        stop.set()
        for s in sims:
            s.thread.join(10)
        redis.Redis.from_url(url).delete("gpuq:workers")
    label = f"sim {n}" + ("" if remote_control else ", remote control off")
    return measure(url, label, n, start, stop_all, args)


def main(argv: list[str] | None = None) -> int:
    """Run the configurations, print the table, write bench/results/redis_scale.json."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", default="1,4")
    parser.add_argument("--sim", default="4,16,100")
    parser.add_argument("--rate", type=float, default=10.0, help="jobs/s while loaded")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gpuq-redis-scale-"))
    server = EmbeddedRedis(tmp / "redis").start()
    os.environ.update({"GPUQ_REDIS_URL": server.url, "GPUQ_DATA_DIR": str(tmp), "GPUQ_SYNTHETIC_JOBS": "true",
                       "GPUQ_ARTIFACT_DIR": str(tmp / "artifacts"), "GPUQ_WORKER_NAME": "sim"})
    _thread_local_redis()
    runs = []
    try:
        for n in [int(x) for x in args.real.split(",") if x]:
            runs.append(real_config(server.url, tmp, n, args))
        sims = [int(x) for x in args.sim.split(",") if x]
        for n in sims:
            runs.append(sim_config(server.url, n, True, args))
        if sims:
            runs.append(sim_config(server.url, max(sims), False, args))
    finally:
        server.stop()
    report(runs, args)
    return 0


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the table and write the JSON summary."""
    print(f"\nload: {args.rate:g} short jobs/s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    head = ("config", "clients", "per worker", "ops/s idle", "ops/s loaded", "PUBLISH/s idle",
            "PUBLISH/s loaded", "CPU% idle", "CPU% loaded", "p99 wait ms", "ping replies/s", "mem MB")
    print(" | ".join(head))
    for run in runs:
        print(" | ".join([run["label"], str(run["clients"]), f"{run['clients_per_worker']:.1f}",
                          f"{run['idle']['ops_per_s']:.0f}", f"{run['loaded']['ops_per_s']:.0f}",
                          f"{run['idle']['publish_per_s']:.1f}", f"{run['loaded']['publish_per_s']:.1f}",
                          f"{run['idle']['cpu_pct']:.1f}", f"{run['loaded']['cpu_pct']:.1f}",
                          f"{run['p99_wait_ms']:.0f}", f"{run['ping_replies']}/{run['ping_broadcast_s']:.2f}",
                          f"{run['redis_used_memory'] / 2**20:.1f}"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"rate": args.rate, "seconds": args.seconds, "load_avg": os.getloadavg(), "runs": runs,
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (RESULTS / "redis_scale.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'redis_scale.json'}")


if __name__ == "__main__":
    sys.exit(main())
