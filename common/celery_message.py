"""Celery messages exactly as kombu's Redis transport stores them, rendered without a broker round trip.

The submit script (common/submit_script.py) pushes a job's ``gpuq.run_job`` / ``gpuq.run_group`` message onto
the broker's list in the same step that stores the record, so a submit costs one round trip and a record is
never stored without its message (or the reverse). The message must stay a stock Celery message: a stock
worker, Flower and ``celery inspect`` read it as if ``send_task`` had sent it.

So the text is not written by hand. For each (task, kind, priority) this module runs Celery's own
``send_task`` once, with placeholder values, through a kombu virtual channel that keeps the messages instead
of delivering them (the Redis channel shares that code: ``prepare_message``, ``basic_publish``, the base64
body encoding and the JSON dump; it only adds the list naming, reproduced by ``list_key``). The placeholders
are then cut out, and each job's message is the template joined with its own id, queue, delivery tag and
body. The ``task-sent`` event (``GPUQ_TASK_EVENTS``) is captured and rendered the same way, with a fresh
logical clock and timestamp per job.

A group's message is left for the script to finish: which of its jobs are stored is known only there (an
idempotent replay is not), so the script fills in the count, the first job id and the body. The body is JSON
in base64; every piece of it is padded with JSON whitespace to a multiple of 3 bytes, so the script joins the
pieces' base64 texts instead of encoding anything.
"""
from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from bisect import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from celery import Celery
from celery.utils.time import utcoffset
from kombu import connection, messaging
from kombu.transport import memory
from kombu.utils import json as kombu_json

from gpuq.common.celery_config import GROUP_TASK_NAME, PRIORITY_LEVELS, TASK_NAME, message_options
from gpuq.common.jobs.registry import JobSpec
from gpuq.common.settings import Settings

# kombu's own JSON encoding (what its Redis transport stores), typed for this module.
kombu_dumps: Callable[[Any], str] = kombu_json.dumps
kombu_loads: Callable[[str | bytes], Any] = kombu_json.loads
_Connection: Any = connection.Connection
_Producer: Any = messaging.Producer
_SLOT = re.compile(r"@@gpuq-(\w+)@@")
# What the script puts in place of a group template's pieces with these names (common/submit_script.py).
SCRIPT_SLOTS = {"count": "\0n", "first": "\0f", "body": "\0b"}


def _slot(name: str) -> str:
    return f"@@gpuq-{name}@@"


class Template:
    """Text with named slots (``@@gpuq-<name>@@`` when it was made), cut into literal parts once."""

    def __init__(self, text: str) -> None:
        self.parts = _SLOT.split(text)  # literal, slot name, literal, ...

    def render(self, values: dict[str, str]) -> str:
        """The text with every slot filled."""
        parts = self.parts[:]
        parts[1::2] = [values[name] for name in parts[1::2]]
        return "".join(parts)

    def pieces(self, values: dict[str, str]) -> list[str]:
        """The text as pieces: slots in ``values`` filled, the script's slots left as its tokens."""
        out = [self.parts[0]]
        for i in range(1, len(self.parts), 2):
            name = self.parts[i]
            if name in values:
                out[-1] += values[name] + self.parts[i + 1]
            else:
                out += [SCRIPT_SLOTS[name], self.parts[i + 1]]
        return out


@dataclass(frozen=True)
class Rendered:
    """One message ready for the script: the list it goes to, its text, and its task-sent event."""

    list_key: str
    envelope: str
    event: str  # '' when task events are off


@dataclass(frozen=True)
class GroupParts:
    """A group message for the script to finish (see the module docstring)."""

    list_key: str
    pieces: list[str]
    body_prefix: str  # base64
    first_segments: list[str]  # base64 of each job id as the body's first member
    later_segments: list[str]  # base64 of each job id as a later member
    body_suffix: str
    event: str  # the task-sent event if every job is stored; '' when task events are off


@dataclass(frozen=True)
class _Templates:
    envelope: Template
    event_body: Template | None
    event_envelope: Template | None


class MessageBuilder:
    """Renders Celery messages for one producer app (one per API process: origin and pid are the process's)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app, self.settings = app, settings
        options = transport_options_of(app)
        self.steps: list[int] = sorted(options.get("priority_steps") or [0])
        self.sep: str = options.get("sep", ":")
        self.event_topic = f"/{broker_db(app)}.celeryev/task.sent"
        self._templates: dict[tuple[str, str, str], _Templates] = {}
        self._lock = threading.Lock()
        body = kombu_dumps([[[_slot("m")]], {}, _EMBED])
        head, tail = body.split(f'"{_slot("m")}"')
        self._group_prefix = _b64(_pad(head))
        self._group_suffix = _b64(tail)

    def single(self, job_id: str, spec: JobSpec, priority: str, queue: str) -> Rendered:
        """``gpuq.run_job(job_id)`` for ``queue`` at ``priority``."""
        level = _level(priority)
        templates = self._get(TASK_NAME, spec, priority)
        values = {"id": job_id, "queue": _json_text(queue)}
        values["body"] = _b64(kombu_dumps([[job_id], {}, _EMBED]))
        return Rendered(self.list_key(queue, level), self._envelope(templates, values), self._event(templates, values))

    def group(self, group_id: str, job_ids: list[str], spec: JobSpec, priority: str, queue: str) -> GroupParts:
        """``gpuq.run_group(job_ids)`` for ``queue`` at ``priority``, for the script to finish."""
        templates = self._get(GROUP_TASK_NAME, spec, priority)
        values = {"id": group_id, "queue": _json_text(queue), "tag": str(uuid.uuid4())}
        event = ""
        if templates.event_body is not None:
            whole = {**values, "count": str(len(job_ids)), "first": job_ids[0]}
            event = self._event(templates, whole)
        firsts = [_b64(_pad(kombu_dumps(job_id))) for job_id in job_ids]
        laters = [_b64(_pad(", " + kombu_dumps(job_id))) for job_id in job_ids]
        return GroupParts(self.list_key(queue, _level(priority)), templates.envelope.pieces(values),
                          self._group_prefix, firsts, laters, self._group_suffix, event)

    def list_key(self, queue: str, level: int) -> str:
        """The Redis list kombu's Redis transport pushes a message of priority ``level`` to (its ``_q_for_pri``)."""
        step = self.steps[bisect(self.steps, max(0, min(level, 9))) - 1]
        return f"{queue}{self.sep}{step}" if step else queue

    def _envelope(self, templates: _Templates, values: dict[str, str]) -> str:
        return templates.envelope.render({**values, "tag": str(uuid.uuid4())})

    def _event(self, templates: _Templates, values: dict[str, str]) -> str:
        if templates.event_body is None or templates.event_envelope is None:
            return ""
        body = templates.event_body.render({**values, "clock": str(self.app.clock.forward()),
                                            "time": repr(time.time()), "utcoffset": repr(utcoffset())})
        return templates.event_envelope.render({"body": _b64(body), "tag": str(uuid.uuid4())})

    def _get(self, task: str, spec: JobSpec, priority: str) -> _Templates:
        key = (task, spec.kind, priority)
        found = self._templates.get(key)
        if found is None:
            with self._lock:
                found = self._templates.get(key) or self._capture(task, spec, priority)
                self._templates[key] = found
        return found

    def _capture(self, task: str, spec: JobSpec, priority: str) -> _Templates:
        """Run Celery's ``send_task`` with placeholders and keep what kombu would have stored."""
        options = message_options(spec, priority if priority in PRIORITY_LEVELS else "normal", _slot("queue"),
                                  self.settings)
        if task == TASK_NAME:
            args: list[Any] = [_slot("id")]
            options.update(argsrepr=repr([_slot("id")]), kwargsrepr=repr({"kind": spec.kind, "priority": priority}))
        else:
            args = [[_slot("id")]]
            options.update(argsrepr=repr([f"{_slot('count')} jobs", _slot("first")]),
                           kwargsrepr=repr({"kind": spec.kind, "priority": priority}).replace(
                               "}", f", 'jobs': {_slot('count')}}}"))
        kept = _capture(self.app, task, args, {**options, "task_id": _slot("id")})
        task_message = kept["queue"]
        task_message["body"] = _slot("body")
        task_message["properties"]["delivery_tag"] = _slot("tag")
        envelope = Template(kombu_dumps(task_message))
        sent = kept.get("event")
        if sent is None:
            return _Templates(envelope, None, None)
        fields = kombu_loads(base64.b64decode(sent["body"]))
        fields.update(clock=_Raw("clock"), timestamp=_Raw("time"), utcoffset=_Raw("utcoffset"))
        sent["body"] = _slot("body")
        sent["properties"]["delivery_tag"] = _slot("tag")
        return _Templates(envelope, Template(_unquote_raw(kombu_dumps(fields))), Template(kombu_dumps(sent)))


# The embed part of a protocol-2 body for a task sent with no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class _Raw(str):
    """A slot for a JSON number: dumped as a string, then unquoted by ``_unquote_raw``."""

    def __new__(cls, name: str) -> Self:
        return super().__new__(cls, "@@raw-" + name + "@@")


def _unquote_raw(text: str) -> str:
    return re.sub(r'"@@raw-(\w+)@@"', r"@@gpuq-\1@@", text)


class _Keeping(memory.Channel):
    """A virtual channel that keeps what is published to it (for this thread) instead of delivering it."""

    kept = threading.local()

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self.kept.messages["queue"] = message

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str | None = None,
                    **kwargs: Any) -> None:
        self.kept.messages["event"] = message


class _KeepingTransport(memory.Transport):
    Channel = _Keeping


def _capture(app: Celery, task: str, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
    _Keeping.kept.messages = {}
    with _Connection(transport=_KeepingTransport) as conn:
        app.send_task(task, args=args, producer=_Producer(conn.default_channel), **options)
    kept: dict[str, Any] = _Keeping.kept.messages
    return kept


def transport_options_of(app: Celery) -> dict[str, Any]:
    """The broker transport options of ``app`` (priority steps and separator name the lists)."""
    return dict(app.conf.broker_transport_options or {})


def broker_db(app: Celery) -> int:
    """The Redis database number of ``app``'s broker (the task-sent event's channel is named after it)."""
    from gpuq.common.redis_client import is_sentinel, parse_sentinel_url

    url = str(app.conf.broker_url)
    if is_sentinel(url):
        return parse_sentinel_url(url).db
    path = url.split("?", 1)[0].rsplit("/", 1)
    return int(path[1]) if len(path) == 2 and path[1].isdigit() else 0


def _level(priority: str) -> int:
    return PRIORITY_LEVELS.get(priority, PRIORITY_LEVELS["normal"])


def _pad(text: str) -> str:
    """``text`` with trailing spaces (JSON whitespace) up to a multiple of 3 bytes: base64 texts then join."""
    size = len(text.encode())
    return text + " " * (-size % 3)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _json_text(value: str) -> str:
    """``value`` as it appears inside a JSON string."""
    return str(kombu_dumps(value)[1:-1])
