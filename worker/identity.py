"""The worker node's identity: its node name, this run's boot id, and the id recorded on the jobs it runs.

Read once from settings (``GPUQ_WORKER_NAME``, ``GPUQ_WORKER_BOOT``). The Celery parent learns its node name
only at ``celeryd_init`` (``-n``) and draws a fresh boot id there, before the pool forks: ``name`` and
``new_boot`` set them in this module, which forked children inherit, and in the environment, which processes
the worker spawns inherit. Nothing else in the worker reads the environment for them.
"""
from __future__ import annotations

import os
import socket
import uuid

from gpuq.common.settings import get_settings

NAME_ENV = "GPUQ_WORKER_NAME"
BOOT_ENV = "GPUQ_WORKER_BOOT"
_node: str | None = None
_boot: str | None = None


def node_name() -> str:
    """This worker's node name (heartbeats, private queues, held jobs, records); else the host name."""
    return _node or get_settings().worker_name or socket.gethostname()


def boot_id() -> str:
    """This worker run's boot id ('' outside a worker)."""
    return _boot if _boot is not None else get_settings().worker_boot


def worker_id() -> str:
    """Identity recorded on a job: the node name plus the pid of the process that runs it."""
    return f"{node_name()}:{os.getpid()}"


def name(node: str | None) -> str:
    """Take ``node`` (Celery's node name; None: the host name) as this worker's name, and its children's."""
    global _node
    _node = str(node or socket.gethostname())
    os.environ[NAME_ENV] = _node  # writing, for processes this worker spawns
    return _node


def new_boot() -> str:
    """Draw this run's boot id (in the parent, before the pool forks)."""
    global _boot
    _boot = uuid.uuid4().hex
    os.environ[BOOT_ENV] = _boot
    return _boot
