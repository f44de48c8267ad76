"""The job record store: one Redis hash per job, status changes and their events applied atomically."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from gpuq.common import keys
from gpuq.common.errors import Conflict, NotFound
from gpuq.common.schemas import JobRecord
from gpuq.common.settings import get_settings

# Fields stored as JSON in the hash; everything else is a plain string.
_JSON_FIELDS = ("params", "inputs", "progress", "result", "error", "artifacts", "timings", "webhook",
                "resolved", "batch")

# Store a new job: its record (fields as flat name/value pairs ARGV[first..last], landing in one HSET: decoding
# them from JSON and writing them one HSET at a time cost several times the rest), its place in the tenant's
# index, its queued event and its idempotency key. A Lua function of its own: the submit script
# (common/submit_script.py) stores each job with it too.
CREATE_FUNCTION = """
local function create(job, index, events, idem, id, queued, submitted_at, ttl, hash, idem_ttl, first, last)
  redis.call('HSET', job, unpack(ARGV, first, last))
  redis.call('EXPIRE', job, ttl)
  redis.call('ZADD', index, submitted_at, id)
  redis.call('XADD', events, '*', 'type', 'queued', 'data', queued)
  redis.call('EXPIRE', events, ttl)
  if idem ~= '' then
    redis.call('SET', idem, cjson.encode({job_id=id, body_hash=hash}), 'EX', idem_ttl)
  end
end
"""
# Create a job unless the tenant's idempotency key already names one.
_SUBMIT = CREATE_FUNCTION + """
if KEYS[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('GET', KEYS[1])
end
create(KEYS[2], KEYS[3], KEYS[4], KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 7, #ARGV)
return ''
"""

# Whether the record is still running the attempt ``attempt`` (the ``attempts`` value its claim wrote): every
# claim raises ``attempts`` under the job's lease, so a worker whose lease lapsed (cut off from Redis, still
# running) finds another number there, or the job requeued, once the job has moved on without it.
_HOLDS = """
local function holds(job, attempt)
  local rec = redis.call('HMGET', job, 'status', 'attempts')
  return rec[1] == 'running' and rec[2] == attempt
end
"""

# Move a job between states only from an allowed state; write fields and append the event atomically.
# KEYS: job, events, stats, the finished channel (a terminal event is announced there: common/finished.py),
# the job's lease, and optionally its queue's running set and its worker's job set;
# ARGV: allowed statuses as ",a,b,", event type ('' for none), event data, ttl, then the fence: [5] the attempt
# the record must be running ('' unfenced), [6] a holder the lease must still name ('' unchecked), [7] the job
# id to take off the running set and the worker's job set once applied ('' none), [8] a holder whose lease is
# dropped once applied (only if it still holds it; '' none); then field name/value pairs from ARGV[9].
# A fenced write that finds the record moved on is refused as {0, status, 1}: a late write of a stale attempt
# (and its unlisting, which would take the next attempt's entries) never lands over the next attempt's.
# The same script counts terminal transitions and requeues (KEYS[3]), so a metric can never disagree
# with the records: a transition that is refused is not counted, and one that happens is counted once.
# The events stream got its TTL with the record when the job was created (CREATE_FUNCTION) and XADD keeps a
# key's TTL, so the stream expires with its record without an EXPIRE per event (ARGV[4], the record TTL, is
# still passed, for the callers' sake, and unused).
_TRANSITION = _HOLDS + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, ''} end
if (ARGV[5] ~= '' and not holds(KEYS[1], ARGV[5])) or (ARGV[6] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[6]) then
  return {0, status, 1}
end
if not string.find(ARGV[1], ',' .. status .. ',', 1, true) then return {0, status} end
local new, err
for i = 9, #ARGV, 2 do
  if ARGV[i] == 'status' then new = ARGV[i + 1] elseif ARGV[i] == 'error' then err = ARGV[i + 1] end
end
if #ARGV >= 10 then redis.call('HSET', KEYS[1], unpack(ARGV, 9)) end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'type', ARGV[2], 'data', ARGV[3])
  if ARGV[2] == 'completed' or ARGV[2] == 'failed' or ARGV[2] == 'cancelled' then
    redis.call('PUBLISH', KEYS[4], KEYS[2])
  end
end
if ARGV[7] ~= '' then
  redis.call('ZREM', KEYS[6], ARGV[7])
  if KEYS[7] then redis.call('SREM', KEYS[7], ARGV[7]) end
end
if ARGV[8] ~= '' and redis.call('GET', KEYS[5]) == ARGV[8] then redis.call('DEL', KEYS[5]) end
local function kind() return redis.call('HGET', KEYS[1], 'kind') or 'unknown' end
if new and new ~= status then
  if new == 'succeeded' or new == 'failed' or new == 'cancelled' then
    local k = kind()
    redis.call('HINCRBY', KEYS[3], 'finished|' .. k .. '|' .. new, 1)
    if new == 'failed' then
      local ok, decoded = pcall(cjson.decode, err or '')
      local etype = (ok and type(decoded) == 'table' and decoded['type']) or 'unknown'
      redis.call('HINCRBY', KEYS[3], 'failed|' .. k .. '|' .. etype, 1)
    end
  elseif new == 'queued' and status == 'running' then
    redis.call('HINCRBY', KEYS[3], 'requeued|' .. kind(), 1)
  end
end
return {1, status}
"""

# A progress report: the record's ``progress`` and a ``progress`` event, fenced as a transition is.
# KEYS: job, events; ARGV: the attempt the record must be running ('' unfenced), the encoded progress.
PROGRESS = _HOLDS + """
if ARGV[1] ~= '' and not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'type', 'progress', 'data', ARGV[2])
return 1
"""

# Claim a fresh job for a group (worker/groups.py): only a queued job that never ran and whose lease is free.
# Anything else (a redelivery, a job another worker holds) is left to the single-job runner's full checks.
# KEYS: job, events, lease, running zset, worker's job set; ARGV: owner, lease ms, started at, event data,
# record ttl (unused: the stream has its TTL, as in the transition script), job id, then field name/value pairs.
_CLAIM_FRESH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then return status or '' end
if (tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') or 0) ~= 0 then return 'attempted' end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'leased' end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('XADD', KEYS[2], '*', 'type', 'started', 'data', ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[6])
redis.call('SADD', KEYS[5], ARGV[6])
return 'claimed'
"""


def body_hash(body: dict[str, Any]) -> str:
    """Stable hash of a request body, used to detect an idempotency key reused with another body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def submit_args(fields: dict[str, Any], idem_key: str | None, request_hash: str) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the submit script."""
    s = get_settings()
    idem = keys.idempotency(fields["tenant"], idem_key) if idem_key else ""
    queued = json_text({"status": "queued", "queue": fields["queue"]})
    return ([idem, keys.job(fields["id"]), keys.tenant_jobs(fields["tenant"]), keys.events(fields["id"])],
            [fields["id"], queued, fields["timings"]["submitted_at"], s.record_ttl_s, request_hash,
             s.idempotency_ttl_s, *_pairs(_encode(fields))])


def replayed_job(existing: str | None, request_hash: str) -> str | None:
    """The submit script's answer: None for a new job, else the job id an idempotency key already named."""
    if not existing:
        return None
    prior = json.loads(existing)
    if prior["body_hash"] != request_hash:
        raise Conflict("Idempotency-Key was already used with a different request body", field="Idempotency-Key")
    return str(prior["job_id"])


def _check_owner(raw: dict[str, str], job_id: str, tenant: str | None) -> None:
    """404 when the job is missing or another tenant's (existence is not leaked)."""
    if not raw or (tenant is not None and raw.get("tenant") != tenant):
        raise NotFound(f"job {job_id} not found", field="job_id")


@dataclass(frozen=True)
class Answer:
    """A stored record to answer with: validated without its result, which stays the JSON text the worker
    stored and is spliced into the answer as it is (an embedding's hundreds of floats are not decoded,
    validated and encoded again for every answer)."""

    record: JobRecord  # ``result`` left out
    result: str | None

    def json(self) -> bytes:
        """The record as JSON, ``result`` last."""
        head = self.record.model_dump_json(exclude={"result"}).encode()
        return head[:-1] + b',"result":' + (self.result.encode() if self.result else b"null") + b"}"


def answer_for(raw: dict[str, str], job_id: str, tenant: str | None) -> Answer:
    """The answer for a raw hash; 404 when missing or another tenant's."""
    _check_owner(raw, job_id, tenant)
    rest = {k: v for k, v in raw.items() if k != "result"}
    return Answer(to_record(_decode(rest)), raw.get("result") or None)


def answers_json(answers: list[Answer]) -> bytes:
    """A ``JobList`` of answers as JSON."""
    return b'{"jobs":[' + b",".join(a.json() for a in answers) + b"]}"


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json_text(v) if k in _JSON_FIELDS else ("" if v is None else str(v)) for k, v in fields.items()}


def json_text(value: Any) -> str:
    """``value`` as compact JSON text: orjson (several times faster on the per-job path; numpy arrays too), the
    standard encoder for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def field_pairs(fields: dict[str, Any]) -> list[str]:
    """A record's fields in their stored form, as the flat name/value list the scripts take."""
    return _pairs(_encode(fields))


def fields_from_raw(raw: dict[str, str], job_id: str, tenant: str | None) -> dict[str, Any]:
    """The decoded fields of a raw hash (as HGETALL returns it); 404 when missing or another tenant's."""
    _check_owner(raw, job_id, tenant)
    return _decode(raw)


def _pairs(encoded: dict[str, str]) -> list[str]:
    """Stored fields as the flat name/value list the scripts take at the end of ARGV."""
    return [x for item in encoded.items() for x in item]


def _allowed(statuses: list[str]) -> str:
    """Allowed statuses in the transition script's ",a,b," form."""
    return "," + ",".join(statuses) + ","


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        # orjson: a result of a few hundred floats (an embedding) decodes several times faster than with json.
        out[k] = orjson.loads(v) if k in _JSON_FIELDS and v else (v if v != "" else None)
    return out


def queue_script(pipe: Any, script: Script, script_keys: list[str], args: list[Any]) -> None:
    """Queue ``script`` on a pipeline as a bare EVALSHA: a script registered on a pipeline makes redis-py ask
    Redis ``SCRIPT EXISTS`` first, a round trip of its own before every such pipeline. Execute the pipeline
    with ``raise_on_error=False`` and read the answer with ``script_answer``."""
    pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)


def script_answer(script: Script, answer: Any, script_keys: list[str], args: list[Any]) -> Any:
    """The answer of a script queued with ``queue_script``; run it now if Redis had lost it (NOSCRIPT: a
    restarted or flushed Redis; the pipeline's other commands ran, this one did not)."""
    if isinstance(answer, NoScriptError):
        return script(keys=script_keys, args=args)
    if isinstance(answer, Exception):
        raise answer
    return answer


@dataclass(frozen=True)
class Transition:
    """Outcome of a compare-and-set on a job's status; ``fenced``: refused because the record has moved on from
    the attempt the write was fenced by."""

    applied: bool
    previous: str | None
    fenced: bool = False


@dataclass(frozen=True)
class Fence:
    """What a claimed attempt's write is fenced by: it applies only while the record is running ``attempt``
    (and, with ``holder``, while that worker still holds the job's lease). ``unlist`` (queue, node) and
    ``release`` (a lease holder) are the attempt's own entries, taken off in the same script once the write
    applies, never when it is refused (by then they may be the next attempt's)."""

    attempt: int
    holder: str | None = None
    unlist: tuple[str, str | None] | None = None
    release: str | None = None


def _call(job_id: str, allowed: list[str], fields: dict[str, Any], event: str, data: dict[str, Any],
          encoded: dict[str, str] | None, fence: Fence | None) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the transition script."""
    script_keys = [keys.job(job_id), keys.events(job_id), keys.stats(), keys.finished(), keys.lease(job_id)]
    guard: list[Any] = ["", "", "", ""]
    if fence is not None:
        guard = [fence.attempt, fence.holder or "", job_id if fence.unlist else "", fence.release or ""]
        if fence.unlist is not None:
            queue, node = fence.unlist
            script_keys += [keys.running(queue), *([keys.worker_jobs(node)] if node else [])]
    return script_keys, [_allowed(allowed), event, json_text(data), get_settings().record_ttl_s, *guard,
                         *_pairs({**_encode(fields), **(encoded or {})})]


def _transition(answer: Any) -> Transition:
    applied, previous, *fenced = answer
    return Transition(bool(applied), previous or None, bool(fenced and fenced[0]))


class JobStore:
    """Typed access to job records and their state machine."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._submit = client.register_script(_SUBMIT)
        self._transition = client.register_script(_TRANSITION)
        self._claim_fresh = client.register_script(_CLAIM_FRESH)
        self._progress = client.register_script(PROGRESS)

    def create(self, fields: dict[str, Any], idem_key: str | None, request_hash: str) -> str | None:
        """Store a new queued job; returns the existing job id when the idempotency key already names one."""
        script_keys, args = submit_args(fields, idem_key, request_hash)
        return replayed_job(self._submit(keys=script_keys, args=args), request_hash)

    def create_many(self, items: list[tuple[dict[str, Any], str | None, str]]) -> list[str | None]:
        """``create`` for many jobs in one round trip: (fields, idempotency key, request hash) each; returns
        None for each new job, else the job id its idempotency key already names."""
        pipe = self.r.pipeline(transaction=False)
        for fields, idem_key, request_hash in items:
            script_keys, args = submit_args(fields, idem_key, request_hash)
            self._submit(keys=script_keys, args=args, client=pipe)
        return [replayed_job(existing, item[2]) for existing, item in zip(pipe.execute(), items)]

    def get_many_raw(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        """``get_raw`` for many jobs in one round trip."""
        return [_decode(raw) if raw else None for raw in self._hgetall_many(job_ids)]

    def _hgetall_many(self, job_ids: list[str]) -> list[dict[str, str]]:
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return cast(list[dict[str, str]], pipe.execute())

    def claim_fresh(self, claims: list[tuple[str, str, dict[str, Any], dict[str, Any]]], owner: str, node: str,
                    lease_ms: int) -> list[str]:
        """Claim fresh queued jobs in one round trip: (job id, queue, fields, started event data) each; a claimed
        job is running, leased by ``owner`` and listed as ``node``'s. Returns per job 'claimed' or why not."""
        ttl = get_settings().record_ttl_s
        pipe = self.r.pipeline(transaction=False)
        calls = []
        for job_id, queue, fields, data in claims:
            call = ([keys.job(job_id), keys.events(job_id), keys.lease(job_id), keys.running(queue),
                     keys.worker_jobs(node)],
                    [owner, lease_ms, fields["timings"]["started_at"], json_text(data), ttl, job_id,
                     *_pairs(_encode(fields))])
            queue_script(pipe, self._claim_fresh, *call)
            calls.append(call)
        answers = pipe.execute(raise_on_error=False)
        return [str(script_answer(self._claim_fresh, answer, *call)) for answer, call in zip(answers, calls)]

    def transition_many(self, changes: list[tuple[str, list[str], dict[str, Any], str, dict[str, Any],
                                                  dict[str, str] | None]],
                        after: Any = None, fences: list[Fence | None] | None = None) -> list[Transition]:
        """``transition`` for many jobs in one round trip: (job id, allowed, fields, event, data, encoded)
        each, fenced by ``fences`` (one per change, None: unfenced); ``after(pipe)`` may queue more commands
        into the same round trip."""
        pipe = self.r.pipeline(transaction=False)
        calls = []
        for (job_id, allowed, fields, event, data, encoded), fence in zip(changes, fences or [None] * len(changes)):
            call = _call(job_id, allowed, fields, event, data, encoded, fence)
            queue_script(pipe, self._transition, *call)
            calls.append(call)
        if after is not None:
            after(pipe)
        answers = pipe.execute(raise_on_error=False)
        for answer in answers[len(changes):]:
            if isinstance(answer, Exception):
                raise answer
        return [_transition(script_answer(self._transition, answer, *call)) for answer, call in zip(answers, calls)]

    def delete(self, job_id: str, tenant: str, idem_key: str | None) -> None:
        """Remove a job that could not be enqueued, so a failed submit leaves nothing behind."""
        pipe = self.r.pipeline()
        pipe.delete(keys.job(job_id), keys.events(job_id))
        pipe.zrem(keys.tenant_jobs(tenant), job_id)
        if idem_key:
            pipe.delete(keys.idempotency(tenant, idem_key))
        pipe.execute()

    def get_raw(self, job_id: str, pipe: Any = None) -> dict[str, Any] | None:
        """The decoded hash, or None when no such job exists; with ``pipe``, only queue the read there (decode
        its answer with ``decode_raw``)."""
        if pipe is not None:
            pipe.hgetall(keys.job(job_id))
            return None
        return decode_raw(cast(dict[str, str], self.r.hgetall(keys.job(job_id))))

    def get(self, job_id: str, tenant: str | None = None) -> JobRecord:
        """The record; 404 when missing or owned by another tenant (existence is not leaked)."""
        return to_record(self.get_fields(job_id, tenant))

    def get_fields(self, job_id: str, tenant: str | None = None) -> dict[str, Any]:
        """The decoded hash; 404 when missing or owned by another tenant."""
        raw = cast(dict[str, str], self.r.hgetall(keys.job(job_id)))
        _check_owner(raw, job_id, tenant)
        return _decode(raw)

    def list_jobs(self, tenant: str, limit: int, status: str | None, kind: str | None) -> list[JobRecord]:
        """The tenant's newest jobs, filtered by status and kind."""
        out: list[JobRecord] = []
        start, page = 0, max(limit * 2, 50)
        while len(out) < limit:
            ids = cast(list[str], self.r.zrevrange(keys.tenant_jobs(tenant), start, start + page - 1))
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

    def dead_letters(self, tenant: str, limit: int) -> list[JobRecord]:
        """The tenant's jobs that were given up on (poison jobs), newest first."""
        ids = cast(list[str], self.r.zrevrange(keys.deadletter(), 0, -1))
        out = []
        for job_id in ids:
            raw = self.get_raw(job_id)
            if raw and raw.get("tenant") == tenant:
                out.append(to_record(raw))
            if len(out) >= limit:
                break
        return out

    def transition(self, job_id: str, allowed: list[str], fields: dict[str, Any],
                   event: str = "", data: dict[str, Any] | None = None,
                   encoded: dict[str, str] | None = None, after: Any = None,
                   fence: Fence | None = None) -> Transition:
        """Compare-and-set the status (``fields`` usually holds the new one) and append ``event``; ``encoded``
        holds fields already in their stored form (a result encoded once, as JSON text, by the worker);
        ``after(pipe)`` may queue more commands into the same round trip (sent whether or not the change
        applies); ``fence``: a claimed attempt's write, refused (``fenced``) once the job has moved on."""
        script_keys, args = _call(job_id, allowed, fields, event, data or {}, encoded, fence)
        if after is None:
            return _transition(self._transition(keys=script_keys, args=args))
        pipe = self.r.pipeline(transaction=False)
        queue_script(pipe, self._transition, script_keys, args)
        after(pipe)
        answers = pipe.execute(raise_on_error=False)
        for answer in answers[1:]:
            if isinstance(answer, Exception):
                raise answer
        return _transition(script_answer(self._transition, answers[0], script_keys, args))

    def update(self, job_id: str, fields: dict[str, Any], fence: Fence | None = None) -> bool:
        """Write fields without a status check (artifacts, resolved sources); with ``fence``, only while the
        job is still running that attempt. True when written."""
        if fence is not None:
            return self.transition(job_id, ["running"], fields, fence=fence).applied
        self.r.hset(keys.job(job_id), mapping=cast(Any, _encode(fields)))
        return True

    def queue_progress(self, pipe: Any, job_id: str, encoded: str, attempt: int | None) -> Callable[[Any], bool]:
        """Queue a progress report (the record's ``progress`` and a ``progress`` event) on ``pipe``, fenced by
        ``attempt`` (None: unfenced); returns what reads its answer from the pipeline's (True: written)."""
        script_keys, args = [keys.job(job_id), keys.events(job_id)], ["" if attempt is None else attempt, encoded]
        queue_script(pipe, self._progress, script_keys, args)
        return lambda answer: bool(script_answer(self._progress, answer, script_keys, args))

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
            done = self.transition(job_id, ["running"], {"cancel_requested": 1}, "log",
                                   {"message": "cancellation requested"})
            if done.applied:
                # The flag is what counts (a worker re-reads it every second); this wakes the worker at once.
                self.r.publish(keys.cancels(), job_id)
            return self.get(job_id, tenant)
        raise Conflict(f"job {job_id} is already {rec.status}", field="job_id")

    def cancel_requested(self, job_id: str) -> bool:
        """True once somebody asked for this job to stop."""
        return self.r.hget(keys.job(job_id), "cancel_requested") == "1"


def decode_raw(raw: dict[str, str] | None) -> dict[str, Any] | None:
    """The decoded fields of a raw hash as HGETALL returns it, or None for an empty answer (no such job)."""
    return _decode(raw) if raw else None


def decode_record(raw: dict[str, str]) -> JobRecord:
    """The wire record from a raw (undecoded) job hash, as HGETALL returns it."""
    return to_record(_decode(raw))


_RECORD_FIELDS = frozenset(JobRecord.model_fields)


def to_record(raw: dict[str, Any]) -> JobRecord:
    """Build the wire record from a decoded hash."""
    data = {k: v for k, v in raw.items() if k in _RECORD_FIELDS}
    data["cancel_requested"] = raw.get("cancel_requested") == "1"
    data["attempts"] = int(raw.get("attempts") or 0)
    return JobRecord.model_validate(data)
