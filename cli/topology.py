"""What ``gpuq up`` runs, and with which settings: the topology the README recommends for this machine.

- ``api``, the ``webhooks`` sender and ``flower``;
- ``worker-inference``: a threads-pool worker with dynamic batching for the ``inference`` queue, sized from the
  cores this process may use (one forward pass per core, one intra-op thread each: the CPU inference-worker
  setting bench/inference.py measures); on a GPU one pass at a time. Celery task events, which Flower shows jobs
  from, are on when Flower runs and off without it (three Redis publishes a job that nobody would read);
- ``worker-jobs``: a prefork worker for the ``image`` and ``finetune`` queues, so a fine-tune that runs for an
  hour never holds the inference worker's slots.

A setting the operator exported wins over every default here.
"""
from __future__ import annotations

import os
from pathlib import Path

from gpuq.cli.supervisor import ServiceSpec
from gpuq.common.settings import Settings

INFERENCE_QUEUES = "inference"
JOB_QUEUES = "image,finetune"
# The workers' soft-shutdown window under `gpuq up`: a running job hands itself back at its next progress point
# (the drain flag), so a few seconds suffice, and Ctrl-C stays well inside the supervisor's grace period.
SOFT_SHUTDOWN_S = "5"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which a container's cpuset also narrows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def has_gpu(settings: Settings) -> bool:
    """Whether workers here run on a GPU (GPUQ_DEVICE, else an NVIDIA device node), without importing torch."""
    if settings.device:
        return settings.device.startswith("cuda")
    return Path("/dev/nvidia0").exists()


def inference_env(settings: Settings, cores: int, flower: bool) -> dict[str, str]:
    """Batching settings for the inference worker: cores / torch threads executors on a CPU, one on a GPU;
    task events only for a Flower to show them."""
    events = {"GPUQ_TASK_EVENTS": "true" if flower else "false"}
    if has_gpu(settings):
        return {"GPUQ_BATCH_EXECUTORS": "1", **events}
    return {"GPUQ_BATCH_EXECUTORS": str(cores), "GPUQ_TORCH_THREADS": "1", "GPUQ_BATCH_MAX_SIZE": "64", **events}


def _own(env: dict[str, str], defaults: dict[str, str]) -> dict[str, str]:
    """``env`` with ``defaults`` filled in where the operator set nothing."""
    return {**env, **{k: v for k, v in defaults.items() if k not in os.environ}}


def services(settings: Settings, env: dict[str, str], flower: bool) -> list[ServiceSpec]:
    """The services of a local stack, in start order."""
    metrics = settings.worker_metrics_port
    worker_defaults = {"GPUQ_WORKER_SOFT_SHUTDOWN_S": SOFT_SHUTDOWN_S}
    # Two workers on one host need two metrics ports: the configured one and the next (0 keeps both off).
    inference = {**_own(env, {**worker_defaults, **inference_env(settings, usable_cores(), flower)}),
                 "GPUQ_WORKER_METRICS_PORT": str(metrics)}
    jobs = {**_own(env, worker_defaults), "GPUQ_WORKER_METRICS_PORT": str(metrics + 1 if metrics else 0)}
    out = [
        ServiceSpec("api", ["api"], env),
        ServiceSpec("worker-inference", ["worker", "--queues", INFERENCE_QUEUES, "--pool", "threads",
                                         "--hostname", "inference@%h"], inference),
        ServiceSpec("worker-jobs", ["worker", "--queues", JOB_QUEUES, "--pool", "prefork",
                                    "--hostname", "jobs@%h"], jobs),
        ServiceSpec("webhooks", ["webhooks"], env),
    ]
    if flower:
        out.append(ServiceSpec("flower", ["flower"], env))
    return out
