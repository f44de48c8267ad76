"""Appending ``output`` events for many jobs at once (streamed tokens of a whole batch in one round trip)."""
from __future__ import annotations

import json
from typing import Any

from common import keys
from common.redis_client import get_redis
from common.settings import get_settings


def emit_outputs(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Append each (job id, data) as an ``output`` event to that job's stream, pipelined."""
    ttl = get_settings().record_ttl_s
    pipe = get_redis().pipeline(transaction=False)
    for job_id, data in events:
        pipe.xadd(keys.events(job_id), {"type": "output", "data": json.dumps(data)})
        pipe.expire(keys.events(job_id), ttl)
    pipe.execute()
