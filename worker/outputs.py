"""Appending ``output`` events for many jobs at once (streamed tokens of a whole batch in one round trip)."""
from __future__ import annotations

import json
from typing import Any

from gpuq.common import keys
from gpuq.common.redis_client import get_redis
from gpuq.common.settings import get_settings
from gpuq.worker.progress_writer import writer_for


def emit_outputs(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Append each (job id, data) as an ``output`` event to that job's stream, pipelined."""
    ttl = get_settings().record_ttl_s
    client = get_redis()
    writer = writer_for(client)
    for job_id in dict.fromkeys(job_id for job_id, _ in events):
        writer.flush(job_id)  # a job's queued progress goes first: streams keep the order of the calls
    pipe = client.pipeline(transaction=False)
    for job_id, data in events:
        pipe.xadd(keys.events(job_id), {"type": "output", "data": json.dumps(data)})
        pipe.expire(keys.events(job_id), ttl)
    pipe.execute()
