"""Redis key layout, in one place so every reader and writer agrees."""
from __future__ import annotations

from gpuq.common.settings import get_settings


def _p() -> str:
    return get_settings().key_prefix


def job(job_id: str) -> str:
    return f"{_p()}:job:{job_id}"


def events(job_id: str) -> str:
    return f"{_p()}:events:{job_id}"


def tenant_jobs(tenant: str) -> str:
    return f"{_p()}:tenant:{tenant}:jobs"


def idempotency(tenant: str, key: str) -> str:
    return f"{_p()}:idem:{tenant}:{key}"


def workers() -> str:
    return f"{_p()}:workers"


def worker_expiry() -> str:
    """Sorted set node -> the time its liveness runs out (last beat + that worker's own TTL)."""
    return f"{_p()}:workers:expiry"


def worker_info(worker_id: str) -> str:
    return f"{_p()}:worker:{worker_id}"


def running(queue: str) -> str:
    """Running jobs of ``queue`` by start time (the claim script appends the queue to ``running("")``)."""
    return f"{_p()}:running:{queue}"


def lease(job_id: str) -> str:
    return f"{_p()}:lease:{job_id}"


def deadletter() -> str:
    return f"{_p()}:deadletter"


def draining(node: str) -> str:
    return f"{_p()}:draining:{node}"


def cancels() -> str:
    """Pub/sub channel: ids of running jobs somebody asked to cancel (workers stop them at once)."""
    return f"{_p()}:cancels"


def finished() -> str:
    """Pub/sub channel: the event-stream key of each job that just got its terminal event (common/finished)."""
    return f"{_p()}:finished"


def sweeper_lock() -> str:
    return f"{_p()}:sweeper-lock"


# --- quotas and webhooks ---
def in_flight(tenant: str) -> str:
    """Zset of the tenant's admitted, not yet finished job ids (quota accounting)."""
    return f"{_p()}:quota:{tenant}:inflight"


def submit_bucket(tenant: str) -> str:
    """Hash holding the tenant's submit-rate token bucket."""
    return f"{_p()}:quota:{tenant}:bucket"


def webhook_jobs() -> str:
    """Zset of job ids whose event streams the webhook sender still follows."""
    return f"{_p()}:wh:jobs"


def webhook_state(job_id: str) -> str:
    """Hash: the sender's cursor in the job's stream, throttle and retry bookkeeping."""
    return f"{_p()}:wh:state:{job_id}"


def webhook_outbox(job_id: str) -> str:
    """List of the job's deliveries not yet accepted by the receiver, oldest first."""
    return f"{_p()}:wh:outbox:{job_id}"


def webhook_due() -> str:
    """Zset of job ids with a pending delivery, scored by when to attempt it next."""
    return f"{_p()}:wh:due"


def webhook_dead() -> str:
    """List of deliveries given up after the last attempt (for operators)."""
    return f"{_p()}:wh:dead"


def webhook_sender_lock() -> str:
    """Lease held by the one active webhook sender."""
    return f"{_p()}:wh:sender"


# Metrics: counters and histograms kept in Redis, so every API replica and every scrape agrees.
def stats() -> str:
    """Job counters: ``submitted|<kind>``, ``finished|<kind>|<status>``, ``failed|<kind>|<error type>``."""
    return f"{_p()}:stats"


def wait_histogram(queue: str) -> str:
    return f"{_p()}:stats:wait:{queue}"


def worker_stats(node: str) -> str:
    """One worker node's published telemetry (counters, gauges, preload state)."""
    return f"{_p()}:wstats:{node}"


def worker_histogram(node: str, name: str) -> str:
    return f"{_p()}:wstats:{node}:{name}"

def worker_jobs(node: str) -> str:
    """Jobs a worker has claimed and not finished: what the reaper recovers when the worker dies."""
    return f"{_p()}:worker:{node}:jobs"


def worker_models(node: str) -> str:
    """Model references resident in a worker (published by the process that loads them)."""
    return f"{_p()}:worker:{node}:models"


def worker_queues() -> str:
    """Hash node -> JSON {own queue: shared queue}; kept until the reaper empties a dead worker's queues."""
    return f"{_p()}:worker-queues"


def assignment(model: str) -> str:
    """The worker a model not yet resident anywhere was assigned to, so its first jobs all go there."""
    return f"{_p()}:assign:{model}"


def reaper_lock() -> str:
    return f"{_p()}:reaper-lock"


def own_queue(queue: str, node: str) -> str:
    """A worker's private queue for jobs of ``queue`` routed to it by affinity."""
    return f"{queue}@{node}"


# OpenAI-compatible API (api/openai/): retried SDK calls, batches, fine-tuning jobs' OpenAI-only fields.
def openai_retry(tenant: str, fingerprint: str) -> str:
    """The object (job id, batch id) the first attempt of an SDK call with this request fingerprint made."""
    return f"{_p()}:oai:retry:{tenant}:{fingerprint}"


def openai_batch(batch_id: str) -> str:
    """Hash: one OpenAI batch (its request, member jobs and output files)."""
    return f"{_p()}:oai:batch:{batch_id}"


def openai_batches(tenant: str) -> str:
    """Sorted set of a tenant's batch ids by creation time."""
    return f"{_p()}:oai:batches:{tenant}"


def openai_finetune(job_id: str) -> str:
    """Hash: what an OpenAI fine-tuning request said that the finetune job's params do not hold."""
    return f"{_p()}:oai:ft:{job_id}"
