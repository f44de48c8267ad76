"""Accepting many jobs in one round trip: the batch submit script stores each job and pushes its message.

For each job, in order and atomically with the rest: a known idempotency key answers with the job it names
(nothing stored, nothing charged); else the tenant's quota admits it (common/quotas.py) or refuses it (nothing
stored); else the record, its index entry, its queued event and its idempotency key are written
(common/records.py), it is registered for webhooks and counted as submitted, and a pointer key the caller
named (an OpenAI SDK call's retry fingerprint, api/openai/retries.py) is set to its id. Then each message whose jobs
were stored is pushed onto its broker list as kombu's Redis transport would push it (common/celery_message.py),
with its ``task-sent`` event: a job is never stored without its message, nor a message pushed for a job that
was not stored. A job whose record exists already was stored by an earlier run of this very call (a client
that retried after losing the reply) and is neither stored nor pushed twice.

Redis refuses a script at its first write when it is out of memory, and never stops one half-way otherwise, so
a batch is stored whole or not at all.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuq.common import keys
from gpuq.common.celery_message import GroupParts, Rendered
from gpuq.common.quotas import ADMIT_FUNCTION
from gpuq.common.records import CREATE_FUNCTION, submit_args

# KEYS: stats, webhook jobs; per job: idempotency ('' for none), job, tenant index, events, in-flight set,
# submit bucket, pointer ('' for none); per message: its list.
# ARGV: jobs, messages; per job: its argument count, kind, max in flight, rate, burst, webhook (0/1), pointer
# ttl, then the
# create arguments (id, queued event, submitted at, ttl, request hash, idempotency ttl, field pairs);
# per message: 's' or 'g', member count, the members' job numbers, then for 's' the envelope and event, for 'g'
# the piece count, the pieces, each member's first and later body segments, body prefix and suffix, and event.
# Returns per job {code, value}: 0 stored, 1 replay (the idempotency record), 2/3/4 refused by the quota
# (in flight, rate with the wait, burst).
SUBMIT_BATCH = ADMIT_FUNCTION + CREATE_FUNCTION + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local jobs, messages = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = 3
local out, stored, ids, counts = {}, {}, {}, {}
for j = 1, jobs do
  local k = 2 + (j - 1) * 7
  local b = a + 7
  local last = a + tonumber(ARGV[a]) - 1
  ids[j] = ARGV[b]
  if redis.call('EXISTS', KEYS[k + 2]) == 1 then
    out[j] = {0, ''}
  elseif KEYS[k + 1] ~= '' and redis.call('EXISTS', KEYS[k + 1]) == 1 then
    out[j] = {1, redis.call('GET', KEYS[k + 1])}
  else
    local verdict, wait = admit(KEYS[k + 5], KEYS[k + 6], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
                                tonumber(ARGV[a + 4]), ARGV[b + 3], now, b, b)
    if verdict ~= 0 then
      out[j] = {verdict + 1, tostring(wait)}
    else
      if ARGV[a + 5] == '1' then redis.call('ZADD', KEYS[2], ARGV[b + 2], ARGV[b]) end
      create(KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 1], ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3],
             ARGV[b + 4], ARGV[b + 5], b + 6, last)
      if KEYS[k + 7] ~= '' then redis.call('SET', KEYS[k + 7], ARGV[b], 'EX', ARGV[a + 6]) end
      counts[ARGV[a + 1]] = (counts[ARGV[a + 1]] or 0) + 1
      stored[j] = true
      out[j] = {0, ''}
    end
  end
  a = last + 1
end
for kind, n in pairs(counts) do redis.call('HINCRBY', KEYS[1], 'submitted|' .. kind, n) end
local list = 3 + jobs * 7
for _ = 1, messages do
  local form, members = ARGV[a], tonumber(ARGV[a + 1])
  local made = {}
  for i = 1, members do
    if stored[tonumber(ARGV[a + 1 + i])] then made[#made + 1] = i end
  end
  local first_job = made[1] and tonumber(ARGV[a + 1 + made[1]])
  a = a + 2 + members
  if form == 's' then
    if first_job then
      redis.call('LPUSH', KEYS[list], ARGV[a])
      if ARGV[a + 1] ~= '' then redis.call('PUBLISH', ARGV[a + 2], ARGV[a + 1]) end
    end
    a = a + 3
  else
    local np = tonumber(ARGV[a])
    local pieces, segments = a + 1, a + 1 + np
    a = segments + 2 * members
    if first_job then
      local body = {ARGV[a]}
      for x, i in ipairs(made) do body[#body + 1] = ARGV[segments + 2 * (i - 1) + (x == 1 and 0 or 1)] end
      body[#body + 1] = ARGV[a + 1]
      local text = {}
      for p = pieces, pieces + np - 1 do
        local piece = ARGV[p]
        if piece == '\\0n' then piece = tostring(#made)
        elseif piece == '\\0f' then piece = ids[first_job]
        elseif piece == '\\0b' then piece = table.concat(body) end
        text[#text + 1] = piece
      end
      redis.call('LPUSH', KEYS[list], table.concat(text))
      -- The event was rendered for the whole group: a group that lost a job to a replay goes without it
      -- (task events are advisory; the worker's own events still follow the job).
      if ARGV[a + 2] ~= '' and #made == members then redis.call('PUBLISH', ARGV[a + 3], ARGV[a + 2]) end
    end
    a = a + 4
  end
  list = list + 1
end
return out
"""


@dataclass(frozen=True)
class Entry:
    """One job to submit: its record's fields, idempotency key and request hash, quota, webhook, and a key to
    point at the job once it is stored (with its ttl in seconds)."""

    fields: dict[str, Any]
    idempotency_key: str | None
    request_hash: str
    limits: tuple[int, float, int]  # max in flight, submit rate, burst (common/quotas.limits)
    webhook: bool
    pointer: tuple[str, int] | None = None


@dataclass(frozen=True)
class Message:
    """A message for some of the batch's jobs (indices into its entries): one job's, or a group's."""

    members: list[int]
    parts: Rendered | GroupParts


@dataclass(frozen=True)
class Outcome:
    """What the script did with one job: 0 stored, 1 replay (``value``: the idempotency record), 2-4 refused."""

    code: int
    value: str


STORED, REPLAY, IN_FLIGHT_FULL = 0, 1, 2


def batch_args(entries: Sequence[Entry], messages: Sequence[Message],
               event_topic: str) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the batch submit script."""
    script_keys: list[str] = [keys.stats(), keys.webhook_jobs()]
    argv: list[Any] = [len(entries), len(messages)]
    for entry in entries:
        tenant = entry.fields["tenant"]
        create_keys, create_args = submit_args(entry.fields, entry.idempotency_key, entry.request_hash)
        pointer, pointer_ttl = entry.pointer or ("", 0)
        script_keys += [*create_keys, keys.in_flight(tenant), keys.submit_bucket(tenant), pointer]
        argv += [7 + len(create_args), entry.fields["kind"], *entry.limits, int(entry.webhook), pointer_ttl,
                 *create_args]
    for message in messages:
        parts = message.parts
        script_keys.append(parts.list_key)
        members = [i + 1 for i in message.members]
        if isinstance(parts, Rendered):
            argv += ["s", len(members), *members, parts.envelope, parts.event, event_topic]
        else:
            segments = [s for pair in zip(parts.first_segments, parts.later_segments) for s in pair]
            argv += ["g", len(members), *members, len(parts.pieces), *parts.pieces, *segments, parts.body_prefix,
                     parts.body_suffix, parts.event, event_topic]
    return script_keys, argv


def outcomes(reply: list[list[Any]]) -> list[Outcome]:
    """The script's reply, one outcome per job."""
    return [Outcome(int(code), str(value)) for code, value in reply]
