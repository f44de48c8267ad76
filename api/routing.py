"""Affinity routing: send a job for a model to the private queue of a live worker that holds it.

The API keeps a routing table refreshed at most every ``GPUQ_AFFINITY_REFRESH_S`` (two pipelined Redis reads:
who is alive, which private queues they own, which models they hold and how deep their private queues are), so
routing a job costs no Redis round trip in the common case. For a kind with ``affinity``:

- a live worker consuming the kind's queue holds the model: the one with the shortest private queue gets it;
  if even that one has ``GPUQ_AFFINITY_SPILL_DEPTH`` jobs waiting (not yet taken by its pool) and another live
  worker has at most half as many, the job goes to that other worker instead, which loads the model as a
  second holder (a hot model spreads; a model that is merely busy everywhere does not thrash);
- nobody holds it: the model is assigned (a short-lived Redis key, compare-and-set so concurrent API processes
  agree) to the live worker with the fewest held and assigned models, and its jobs go there until the worker
  reports it resident, so the first burst of jobs loads the model once, not once per worker;
- no live worker serves the kind: the shared queue, which every worker of the kind consumes.

Nothing is stranded: only live workers get jobs, and the workers' reaper moves a dead worker's private queue
back to the shared queue (``worker/reaper.py``).
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import redis

from gpuq.common import keys
from gpuq.common.celery_config import queue_lists
from gpuq.common.jobs.registry import JobSpec
from gpuq.common.settings import Settings

# Keep a live assignment; replace one that names a dead worker, or the one named in ARGV[4] (a worker this API
# no longer sees as live, though its heartbeat has not yet expired in Redis).
_ASSIGN = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[4] then
  local until_ = redis.call('ZSCORE', KEYS[2], current)
  if until_ and tonumber(until_) >= tonumber(ARGV[2]) then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return ARGV[1]
"""


@dataclass
class Table:
    """The API's view of the workers, as of ``loaded_at``."""

    loaded_at: float = 0.0
    # shared queue -> live nodes with a private queue for it
    consumers: dict[str, list[str]] = field(default_factory=dict)
    holders: dict[str, set[str]] = field(default_factory=dict)  # model -> live nodes holding it
    held: Counter[str] = field(default_factory=Counter)  # node -> models held
    depth: Counter[str] = field(default_factory=Counter)  # node -> jobs waiting in its private queues
    routed: Counter[str] = field(default_factory=Counter)  # node -> jobs this process routed there since
    assigned: dict[str, tuple[str, float]] = field(default_factory=dict)  # model -> (node, valid until)


class Router:
    """Chooses the queue for each job; one per API process."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self.table = Table()
        self._lock = threading.Lock()
        self._assign_lock = threading.Lock()
        self._assign = client.register_script(_ASSIGN)

    def route(self, spec: JobSpec, model: str, jobs: int = 1) -> str:
        """The queue to publish this job (or ``jobs`` jobs of the same model, a bulk submit's group) to."""
        if not spec.affinity or not self.settings.affinity_routing:
            return spec.queue
        table = self._fresh()
        nodes = table.consumers.get(spec.queue)
        if not nodes:
            return spec.queue
        holders = [n for n in nodes if n in table.holders.get(model, ())]
        node = self._pick_holder(table, nodes, holders) if holders else self._assigned(table, model, nodes)
        with self._lock:
            table.routed[node] += jobs
        return keys.own_queue(spec.queue, node)

    def routes_offline(self, spec: JobSpec, model: str) -> bool:
        """Whether ``route`` can answer from the table already held, with no Redis round trip (an event loop
        calls it directly then, else in a thread)."""
        if not spec.affinity or not self.settings.affinity_routing:
            return True
        table = self.table
        if not table.loaded_at or time.monotonic() - table.loaded_at >= self.settings.affinity_refresh_s:
            return False
        nodes = table.consumers.get(spec.queue)
        if not nodes or any(n in table.holders.get(model, ()) for n in nodes):
            return True
        cached = table.assigned.get(model)
        return bool(cached and cached[1] > time.time() and cached[0] in nodes)

    def _pick_holder(self, table: Table, nodes: list[str], holders: list[str]) -> str:
        # Spilling looks at measured backlog only: a worker takes as many jobs as it has pool slots before its
        # private queue grows, so jobs merely routed there since the last refresh say nothing about it.
        best = min(holders, key=lambda n: (table.depth[n], table.routed[n]))
        if table.depth[best] < self.settings.affinity_spill_depth:
            return best
        idle = min(nodes, key=lambda n: (table.depth[n], table.routed[n]))
        return idle if table.depth[idle] * 2 <= table.depth[best] else best

    def _assigned(self, table: Table, model: str, nodes: list[str]) -> str:
        # One thread at a time: two new models arriving together must not both pick the same emptiest worker.
        with self._assign_lock:
            now = time.time()
            cached = table.assigned.get(model)
            if cached and cached[1] > now and cached[0] in nodes:
                return cached[0]
            pick = min(nodes, key=lambda n: (table.held[n], table.depth[n] + table.routed[n], n))
            ttl = self.settings.affinity_assign_ttl_s
            where = [keys.assignment(model), keys.worker_expiry()]
            node = str(self._assign(keys=where, args=[pick, now, ttl, ""]))
            if node not in nodes:
                # Assigned (maybe by another API process) to a worker this one does not see as live: one that
                # just stopped, or one not yet seen. Replace it in Redis, so every API process and the next
                # refresh here agree on ``pick``; otherwise the model would be loaded again wherever a later
                # pick lands.
                node = str(self._assign(keys=where, args=[pick, now, ttl, node]))
                node = node if node in nodes else pick
            with self._lock:
                table.assigned[model] = (node, now + min(ttl, 5))
                table.held[node] += 1
            return node

    def _fresh(self) -> Table:
        table = self.table
        age = time.monotonic() - table.loaded_at
        if table.loaded_at and age < self.settings.affinity_refresh_s:
            return table
        # Another thread is refreshing: a slightly stale table will do, but not the empty one a process starts
        # with (a first burst of jobs would all go to the shared queue and load the model everywhere), nor one
        # from before an idle spell (it may name workers that have left since: their queues are consumed by
        # nobody until the reaper hands them back, and then by every worker, each loading the model).
        fresh_enough = table.loaded_at and age < max(2.0, 4 * self.settings.affinity_refresh_s)
        if not self._lock.acquire(blocking=not fresh_enough):
            return table
        try:
            if self.table is not table:  # refreshed while this thread waited for the lock
                return self.table
            self.table = self._load(table)
        finally:
            self._lock.release()
        return self.table

    def _load(self, previous: Table) -> Table:
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        pipe.zrangebyscore(keys.worker_expiry(), now, "+inf")
        pipe.hgetall(keys.worker_queues())
        live, registry = pipe.execute()
        table = Table(loaded_at=time.monotonic(), assigned=previous.assigned)
        private: dict[str, list[str]] = {}
        for node in live:
            raw = registry.get(node)
            mapping: dict[str, str] = json.loads(raw)["queues"] if raw else {}
            private[node] = list(mapping)
            for shared in mapping.values():
                table.consumers.setdefault(shared, []).append(node)
        pipe = self.r.pipeline(transaction=False)
        for node, queues in private.items():
            pipe.smembers(keys.worker_models(node))
            for queue in queues:
                for name in queue_lists(queue):
                    pipe.llen(name)
        replies = iter(pipe.execute())
        for node, queues in private.items():
            for model in next(replies):
                table.holders.setdefault(model, set()).add(node)
                table.held[node] += 1
            lists = sum(len(queue_lists(q)) for q in queues)
            table.depth[node] = sum(next(replies) for _ in range(lists))
        # A model assigned but not yet resident counts for its worker, or the next new model would be assigned
        # to the same worker again.
        for model, (node, until) in previous.assigned.items():
            if until > now and node in private and node not in table.holders.get(model, ()):
                table.held[node] += 1
        return table
