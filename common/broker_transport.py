"""kombu's Redis transport, minus a redis-py client built for every acknowledgement.

kombu's Redis channel creates a new ``redis.Redis`` object (over its shared connection pool) each time it needs
a client: for every message's unacked bookkeeping and every ack. Building one costs redis-py 8 a few hundred
microseconds of Python; profiling a threads-pool worker showed about a fifth of its interpreter time there.
A client object is safe to share between threads (each command takes a connection from the pool), so this
channel keeps one per pool. Installed for ``redis://`` and ``rediss://`` in the worker and in the API's
producer (Sentinel keeps kombu's).

A channel is closed when the consumer loses Redis and reconnects, while a threads-pool worker's jobs still
hold messages of it and ack them when they end. kombu then rebuilds the closed channel's pool from
``channel.connection``, which closing set to None: an ``AttributeError`` that is no connection error, so
nothing in Celery expects it. A closed channel keeps its last client instead (redis-py reconnects its pool on
the next command, so the ack reaches Redis once it is back), and without one answers with a connection error.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps


Receipt = Callable[[Any, Any], None]  # (pipeline, message): more commands for a delivered message's round trip
_RECEIPT: dict[str, Receipt] = {}


def on_receipt(hook: Receipt) -> None:
    """Queue ``hook(pipe, message)``'s commands into the round trip that records each delivered message as
    unacknowledged (the worker lists the message's jobs as its own there: no round trip of their own)."""
    _RECEIPT["hook"] = hook


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's unacked bookkeeping, with the receipt hook's commands in the same MULTI/EXEC."""

    def append(self, message: Any, delivery_tag: str) -> None:
        hook = _RECEIPT.get("hook")
        if hook is None:
            super().append(message, delivery_tag)
            return
        delivery = message.delivery_info
        with self.pipe_or_acquire() as pipe:  # as kombu's own append, plus the hook
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag,
                      dumps([message._raw, delivery["exchange"], delivery["routing_key"]]))
            hook(pipe, message)
            pipe.execute()
            virtual.QoS.append(self, message, delivery_tag)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """A kombu Redis channel that reuses one client per connection pool."""

    QoS = QoS
    _shared: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        yield self._shared_client()

    def _shared_client(self) -> Any:
        """The channel's client: the shared one while its pool is current, a new one when the pool was
        rebuilt, the last one once the channel is closed."""
        shared = self._shared
        if self.connection is None:  # closed: there is no pool to rebuild from
            if shared is None:
                raise redis.ConnectionError("broker channel closed (the consumer is reconnecting)")
            return shared
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared = self._create_client()  # type: ignore[no-untyped-call]
        return shared


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


def install() -> None:
    """Make ``redis://`` and ``rediss://`` broker URLs use this transport (in this process)."""
    from kombu import transport

    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
        # kombu caches the class per scheme on first use: a connection made before this call would pin
        # the stock transport for the rest of the process.
        transport._transport_cache.pop(scheme, None)
