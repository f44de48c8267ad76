"""gpuq's kombu Redis channel on a real Redis: one client per pool, and a message whose channel was closed (the
consumer reconnecting after Redis dropped) can still be acked by the job that held it."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue

from gpuq.common import broker_transport


@pytest.fixture()
def connection(redis_url: str) -> Iterator[Connection]:
    # The class itself, not the ``redis://`` alias: kombu caches what an alias resolved to in this process.
    conn = Connection(redis_url, transport=broker_transport.Transport)
    yield conn
    conn.release()


def _received(conn: Connection) -> tuple[object, str]:
    """Publish one message to a fresh queue and take it unacked (as an acks-late worker holds it)."""
    name = f"transport-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    with conn.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
    message = queue(conn.default_channel).get(no_ack=False)
    assert message is not None
    return message, name


def test_channel_reuses_one_client_while_its_pool_stands(connection: Connection) -> None:
    channel = connection.default_channel
    assert isinstance(channel, broker_transport.Channel)
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second


def test_message_of_a_closed_channel_is_acked_and_leaves_unacked(connection: Connection, redis_url: str) -> None:
    message, _ = _received(connection)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    tag = message.delivery_tag
    assert r.hexists("unacked", tag)
    connection.default_channel.close()  # what Celery's consumer does when it reconnects
    message.ack()  # the job ends after the reconnect: no AttributeError, and the broker forgets the message
    assert not r.hexists("unacked", tag)


def test_closed_channel_without_a_client_answers_with_a_connection_error(connection: Connection) -> None:
    channel = connection.channel()
    channel.close()
    with pytest.raises(redis.ConnectionError), channel.conn_or_acquire():
        pass
