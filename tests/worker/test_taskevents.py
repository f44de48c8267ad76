"""Celery task events from a real worker, watched with a real Celery event receiver (what Flower reads): progress
shows as ``task-progress`` where task events are on, and a worker with them off sends no task event at all."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.conftest import Stack
from tests.support.jobs import run
from tests.support.processes import wait_for


@pytest.fixture()
def stack(service_env: dict[str, str]) -> Iterator[Stack]:
    base = {k: v for k, v in service_env.items() if k not in ("GPUQ_REDIS_URL", "GPUQ_TASK_EVENTS")}
    s = Stack(base, GPUQ_TASK_EVENT_PROGRESS_INTERVAL_S="0")
    yield s
    s.stop()
    shutil.rmtree(s.dir, ignore_errors=True)


class Events(threading.Thread):
    """Every event on the stack's Celery event exchange, from the moment ``ready`` is set."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.app = stack.celery_app()
        self.seen: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.receiver: Any = None

    def run(self) -> None:
        with self.app.connection() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            consuming = self.receiver.consume(limit=None, timeout=None, wakeup=False)
            self.ready.set()
            for _ in consuming:
                if self.receiver.should_stop:
                    return

    def types_for(self, job_id: str) -> list[str]:
        return [e["type"] for e in list(self.seen) if e.get("uuid") == job_id]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("task_events", ["true", "false"])
def test_task_progress_events_are_sent_only_where_task_events_are_on(stack: Stack, task_events: str) -> None:
    stack.start_redis()
    stack.env["GPUQ_TASK_EVENTS"] = task_events
    events = Events(stack)
    events.start()
    assert events.ready.wait(30)
    stack.start_worker("ev")
    stack.start_api()
    wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in list(events.seen)), 30,
             "a worker heartbeat on the event exchange (the receiver is listening)")
    with stack.client() as c:
        job = run(c, {"kind": "synthetic", "model": "events", "params": {"steps": 4, "step_ms": 50}})
    assert job["status"] == "succeeded"
    if task_events == "true":
        wait_for(lambda: "task-succeeded" in events.types_for(job["id"]), 30, "task-succeeded")
        assert events.types_for(job["id"]).count("task-progress") >= 1, events.types_for(job["id"])
    else:
        # Both the worker's heartbeats and the job's end have been and gone: an event sent would be here by now.
        beats = sum(e["type"] == "worker-heartbeat" for e in list(events.seen))
        wait_for(lambda: sum(e["type"] == "worker-heartbeat" for e in list(events.seen)) > beats, 30,
                 "one more worker heartbeat after the job")
        assert events.types_for(job["id"]) == []
    events.receiver.should_stop = True
