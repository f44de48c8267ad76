"""Celery configuration shared by the API (which only publishes) and the workers (which consume)."""
from __future__ import annotations

from typing import Any

from gpuq.common.errors import ConfigError
from gpuq.common.jobs.registry import JobSpec, all_specs
from gpuq.common.settings import Settings

TASK_NAME = "gpuq.run_job"
# One message carrying several fresh jobs of one kind, model and priority (bulk submits; worker/groups.py).
GROUP_TASK_NAME = "gpuq.run_group"
# kombu's Redis transport serves lower numbers first.
PRIORITY_LEVELS: dict[str, int] = {"high": 0, "normal": 3, "low": 6}
# Margin between the longest hard time limit and the visibility timeout: a job that is still
# legitimately running must never look lost to the broker and be handed to a second worker.
VISIBILITY_MARGIN_S = 60
# Seconds between the soft limit (the job records a timeout itself) and the hard kill.


def queue_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps for ``queue``: one per priority step, ``<queue>:<step>`` (0: bare)."""
    return [queue if step == 0 else f"{queue}:{step}" for step in sorted(set(PRIORITY_LEVELS.values()))]


def transport_options(settings: Settings) -> dict[str, Any]:
    """Options kombu's Redis transport reads; the visibility timeout must be in each copy."""
    opts: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout_s,
        "priority_steps": sorted(set(PRIORITY_LEVELS.values())),
        "sep": ":",
        "queue_order_strategy": "priority",
        "health_check_interval": 30,
    }
    if settings.resolved_redis_url.startswith("sentinel://"):
        opts["master_name"] = settings.redis_sentinel_master
        if settings.redis_sentinel_password is not None:
            opts["sentinel_kwargs"] = {"password": settings.redis_sentinel_password.get_secret_value()}
    return opts


def celery_config(settings: Settings) -> dict[str, Any]:
    """The full Celery config dict (``app.conf.update``)."""
    options = transport_options(settings)
    return {
        "broker_url": settings.resolved_redis_url,
        "broker_transport_options": options,
        # Celery keeps a second copy of transport options for a Redis result backend; gpuq's own
        # job record is the contract, so results are ignored, but the copy is kept in step anyway.
        "result_backend_transport_options": dict(options),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_default_queue": "inference",
        "task_create_missing_queues": True,
        "task_inherit_parent_priority": False,
        "worker_hijack_root_logger": False,
        "worker_soft_shutdown_timeout": float(settings.worker_soft_shutdown_s),
        "worker_enable_soft_shutdown_on_idle": False,  # an idle worker has nothing to wait for
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "enable_utc": True,
    }


def check_visibility_timeout(settings: Settings) -> None:
    """Refuse to start when a job could outlive the broker's visibility timeout."""
    longest = max([s.effective_time_limit(settings) for s in all_specs()] + [settings.job_time_limit_s])
    if settings.visibility_timeout_s < longest + VISIBILITY_MARGIN_S:
        raise ConfigError(
            f"GPUQ_VISIBILITY_TIMEOUT_S={settings.visibility_timeout_s} must exceed the longest job time "
            f"limit ({longest}s) by at least {VISIBILITY_MARGIN_S}s, or a running job would be redelivered",
            field="GPUQ_VISIBILITY_TIMEOUT_S",
        )


def message_options(spec: JobSpec, priority: str, queue: str, settings: Settings) -> dict[str, Any]:
    """``send_task`` options for one job's message (used by the API and by the worker's reaper)."""
    limit = spec.effective_time_limit(settings)
    return {
        "queue": queue, "priority": PRIORITY_LEVELS[priority],
        "soft_time_limit": limit, "time_limit": limit + settings.time_limit_grace_s,
        "retry": True, "retry_policy": {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
    }
