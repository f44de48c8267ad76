"""The job record store: one Redis hash per job, status changes and their events applied atomically."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from common import keys
from common.errors import Conflict, NotFound
from common.schemas import JobRecord
from common.settings import get_settings

# Fields stored as JSON in the hash; everything else is a plain string.
_JSON_FIELDS = ("params", "inputs", "progress", "result", "error", "artifacts", "timings", "batch")

# Create a job unless the tenant's idempotency key already names one; append the queued event; push its task
# message onto the broker list (KEYS[5], payload ARGV[7]) in the same step, so a job is never stored without
# its message nor enqueued without its record.
_SUBMIT = """
if KEYS[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('GET', KEYS[1])
end
local fields = cjson.decode(ARGV[1])
for k, v in pairs(fields) do redis.call('HSET', KEYS[2], k, v) end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], fields['id'])
redis.call('XADD', KEYS[4], '*', 'type', 'queued', 'data', ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[4])
if KEYS[1] ~= '' then
  redis.call('SET', KEYS[1], cjson.encode({job_id=fields['id'], body_hash=ARGV[5]}), 'EX', ARGV[6])
end
if KEYS[5] ~= '' then redis.call('LPUSH', KEYS[5], ARGV[7]) end
return ''
"""

# Move a job between states only from an allowed state; write fields and append the event atomically.
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, ''} end
local allowed = cjson.decode(ARGV[1])
local ok = false
for _, s in ipairs(allowed) do if s == status then ok = true end end
if not ok then return {0, status} end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'type', ARGV[3], 'data', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return {1, status}
"""


# Claim a job for a worker in one round trip. Refuses terminal jobs and jobs running on another *live* worker
# (a redelivered message for a job that is still running elsewhere), counts the attempt, appends ``started``
# and returns the whole record. A job out of attempts (ARGV[5]: JSON {kind: max attempts}) is returned
# untouched for the caller to fail.
_CLAIM = """
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return {'missing'} end
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
if h['status'] ~= 'queued' and h['status'] ~= 'running' then return {'terminal', h['status']} end
if h['status'] == 'running' and h['node'] and h['node'] ~= '' and h['node'] ~= ARGV[1] then
  local beat = redis.call('ZSCORE', KEYS[5], h['node'])
  if beat and tonumber(beat) >= tonumber(ARGV[4]) then return {'busy', h['node']} end
end
local attempts = tonumber(h['attempts'] or '0') + 1
local outcome = 'ok'
if attempts > (cjson.decode(ARGV[5])[h['kind']] or 3) then
  outcome = 'exhausted'
else
  local timings = cjson.decode(h['timings'] or '{}')
  local now = tonumber(ARGV[3])
  timings['started_at'] = now
  if type(timings['submitted_at']) == 'number' then
    timings['queue_wait_ms'] = math.floor((now - timings['submitted_at']) * 1e6 + 0.5) / 1e3
  end
  h['timings'] = cjson.encode(timings)
  h['status'] = 'running'; h['worker'] = ARGV[2]; h['node'] = ARGV[1]; h['attempts'] = tostring(attempts)
  redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'node', ARGV[1], 'attempts', attempts,
             'timings', h['timings'])
  redis.call('XADD', KEYS[2], '*', 'type', 'started', 'data',
             cjson.encode({worker = ARGV[2], attempt = attempts}))
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('ZADD', KEYS[3] .. (h['queue'] or ''), now, h['id'])
  redis.call('SADD', KEYS[4], h['id'])
end
local out = {outcome}
for k, v in pairs(h) do out[#out + 1] = k; out[#out + 1] = v end
return out
"""

# Write a job's terminal state (from queued/running only), append its event, drop it from the running index
# and the worker's held set, and announce it on the done channel: one round trip. Fields come as ARGV pairs.
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if KEYS[4] ~= '' then redis.call('SREM', KEYS[4], ARGV[4]) end
redis.call('ZREM', KEYS[3], ARGV[4])
if status ~= 'queued' and status ~= 'running' then return {0, status or ''} end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('XADD', KEYS[2], '*', 'type', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return {1, status}
"""


def body_hash(body: dict[str, Any]) -> str:
    """Stable hash of a request body, used to detect an idempotency key reused with another body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def submit_args(fields: dict[str, Any], idem_key: str | None, request_hash: str,
                message: tuple[str, str] | None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the submit script (shared by the sync store and the API's asyncio store)."""
    s = get_settings()
    idem = keys.idempotency(fields["tenant"], idem_key) if idem_key else ""
    queued = json.dumps({"status": "queued", "queue": fields["queue"]})
    return ([idem, keys.job(fields["id"]), keys.tenant_jobs(fields["tenant"]), keys.events(fields["id"]),
             message[0] if message else ""],
            [json.dumps(_encode(fields)), queued, fields["timings"]["submitted_at"], s.record_ttl_s,
             request_hash, s.idempotency_ttl_s, message[1] if message else ""])


def replayed_job(existing: str | None, request_hash: str) -> str | None:
    """The submit script's answer: None for a new job, else the job id an idempotency key already named."""
    if not existing:
        return None
    prior = json.loads(existing)
    if prior["body_hash"] != request_hash:
        raise Conflict("Idempotency-Key was already used with a different request body", field="Idempotency-Key")
    return str(prior["job_id"])


def record_for(raw: dict[Any, Any], job_id: str, tenant: str | None) -> JobRecord:
    """The wire record from a raw hash; 404 when missing or another tenant's (existence is not leaked)."""
    if not raw or (tenant is not None and raw.get("tenant") != tenant):
        raise NotFound(f"job {job_id} not found", field="job_id")
    return to_record(_decode(raw))


def record_body(raw: dict[Any, Any], job_id: str, tenant: str | None) -> bytes:
    """The wire record as JSON bytes, with the stored result text spliced in rather than parsed and re-encoded
    (an embedding job's result is most of its record: thousands of floats)."""
    if not raw or (tenant is not None and raw.get("tenant") != tenant):
        raise NotFound(f"job {job_id} not found", field="job_id")
    result = raw.get("result") or "null"
    data = to_record(_decode({k: v for k, v in raw.items() if k != "result"})).model_dump(mode="json")
    data["result"] = orjson.Fragment(result)
    return orjson.dumps(data)


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if k in _JSON_FIELDS else ("" if v is None else str(v)) for k, v in fields.items()}


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        out[k] = json.loads(v) if k in _JSON_FIELDS and v else (v if v != "" else None)
    return out


@dataclass(frozen=True)
class Transition:
    """Outcome of a compare-and-set on a job's status."""

    applied: bool
    previous: str | None


@dataclass(frozen=True)
class Claim:
    """Outcome of a claim: ``ok`` (with the record), ``missing``, ``terminal``, ``busy``, ``exhausted``."""

    outcome: str
    record: dict[str, Any] | None
    detail: str


class JobStore:
    """Typed access to job records and their state machine."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._submit = client.register_script(_SUBMIT)
        self._transition = client.register_script(_TRANSITION)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)

    def create(self, fields: dict[str, Any], idem_key: str | None, request_hash: str,
               message: tuple[str, str] | None = None) -> str | None:
        """Store a new queued job (and push its broker ``message``: list key, payload); returns the existing job
        id instead when the idempotency key already names one."""
        script_keys, args = submit_args(fields, idem_key, request_hash, message)
        return replayed_job(self._submit(keys=script_keys, args=args), request_hash)

    def delete(self, job_id: str, tenant: str, idem_key: str | None) -> None:
        """Remove a job that could not be enqueued, so a failed submit leaves nothing behind."""
        pipe = self.r.pipeline()
        pipe.delete(keys.job(job_id), keys.events(job_id))
        pipe.zrem(keys.tenant_jobs(tenant), job_id)
        if idem_key:
            pipe.delete(keys.idempotency(tenant, idem_key))
        pipe.execute()

    def get_raw(self, job_id: str) -> dict[str, Any] | None:
        """The decoded hash, or None when no such job exists."""
        raw = self.r.hgetall(keys.job(job_id))
        return _decode(raw) if raw else None

    def get(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The record; 404 when missing or owned by another tenant (existence is not leaked)."""
        return record_for(self.r.hgetall(keys.job(job_id)), job_id, tenant)

    def body(self, job_id: str, tenant: str | None = None) -> bytes:
        """The record as response bytes (see ``record_body``)."""
        return record_body(self.r.hgetall(keys.job(job_id)), job_id, tenant)

    def list(self, tenant: str, limit: int, status: str | None, kind: str | None) -> list[JobRecord]:
        """The tenant's newest jobs, filtered by status and kind."""
        out: list[JobRecord] = []
        start, page = 0, max(limit * 2, 50)
        while len(out) < limit:
            ids = self.r.zrevrange(keys.tenant_jobs(tenant), start, start + page - 1)
            if not ids:
                break
            pipe = self.r.pipeline()
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
            for raw in pipe.execute():
                rec = _decode(raw) if raw else None
                if rec and (status is None or rec["status"] == status) and (kind is None or rec["kind"] == kind):
                    out.append(to_record(rec))
            start += page
        return out[:limit]

    def transition(self, job_id: str, allowed: list[str], fields: dict[str, Any],
                   event: str = "", data: dict[str, Any] | None = None) -> Transition:
        """Compare-and-set the status (``fields`` usually holds the new one) and append ``event``."""
        applied, previous = self._transition(
            keys=[keys.job(job_id), keys.events(job_id)],
            args=[json.dumps(allowed), json.dumps(_encode(fields)), event, json.dumps(data or {}),
                  get_settings().record_ttl_s],
        )
        return Transition(bool(applied), previous or None)

    def claim(self, job_id: str, node: str, worker: str, max_attempts: dict[str, int]) -> Claim:
        """Move a queued (or orphaned running) job to running for ``node`` and return its record."""
        s = get_settings()
        now = time.time()
        reply = self._claim(
            keys=[keys.job(job_id), keys.events(job_id), keys.running(""), keys.worker_jobs(node),
                  keys.worker_expiry()],
            args=[node, worker, now, now, json.dumps(max_attempts), s.record_ttl_s],
        )
        outcome = str(reply[0])
        if outcome not in ("ok", "exhausted"):
            return Claim(outcome, None, str(reply[1]) if len(reply) > 1 else "")
        flat = reply[1:]
        return Claim(outcome, _decode(dict(zip(flat[::2], flat[1::2]))), "")

    def finish(self, job_id: str, queue: str, node: str | None, fields: dict[str, Any], event: str,
               data: dict[str, Any], result_json: str | None = None) -> Transition:
        """Write the terminal state (``fields`` holds it; ``result_json`` the already encoded result) and its
        event; drop the job from the running and held indexes; announce it on the done channel."""
        encoded = _encode(fields)
        if result_json is not None:
            encoded["result"] = result_json
        args: list[Any] = [event, json.dumps(data), get_settings().record_ttl_s, job_id, keys.done_channel()]
        for pair in encoded.items():
            args.extend(pair)
        applied, previous = self._finish(
            keys=[keys.job(job_id), keys.events(job_id), keys.running(queue),
                  keys.worker_jobs(node) if node else ""],
            args=args,
        )
        return Transition(bool(applied), previous or None)

    def update(self, job_id: str, fields: dict[str, Any]) -> None:
        """Write fields without a status check (progress, artifacts)."""
        self.r.hset(keys.job(job_id), mapping=_encode(fields))

    def request_cancel(self, job_id: str, tenant: str) -> JobRecord:
        """Cancel a queued job at once, or flag a running one to stop at its next progress point."""
        rec = self.get(job_id, tenant)
        now = time.time()
        if rec.status == "queued":
            timings = rec.timings.model_copy(update={"finished_at": now}).model_dump()
            done = self.transition(job_id, ["queued"], {"status": "cancelled", "cancel_requested": 1,
                                                        "timings": timings},
                                   "cancelled", {"reason": "cancelled before it started"})
            if done.applied:
                return self.get(job_id, tenant)
            rec = self.get(job_id, tenant)
        if rec.status == "running":
            self.transition(job_id, ["running"], {"cancel_requested": 1}, "log",
                            {"message": "cancellation requested"})
            return self.get(job_id, tenant)
        raise Conflict(f"job {job_id} is already {rec.status}", field="job_id")

    def cancel_requested(self, job_id: str) -> bool:
        """True once somebody asked for this job to stop."""
        return self.r.hget(keys.job(job_id), "cancel_requested") == "1"


def to_record(raw: dict[str, Any]) -> JobRecord:
    """Build the wire record from a decoded hash."""
    data = {k: v for k, v in raw.items() if k in JobRecord.model_fields}
    data["cancel_requested"] = raw.get("cancel_requested") == "1"
    data["attempts"] = int(raw.get("attempts") or 0)
    return JobRecord.model_validate(data)
