"""Handler for the ``synthetic`` kind: fixed work per step, optional injected failure."""
from __future__ import annotations

import os
import time
from typing import Any

from gpuq.common.errors import JobError, TransientJobError
from gpuq.common.jobs.synthetic import StoredSyntheticParams
from gpuq.worker.context import JobContext


def _work(step_ms: float, mode: str) -> None:
    if step_ms <= 0:
        return
    if mode == "sleep":
        time.sleep(step_ms / 1000)
        return
    # CPU time, not wall time: the step costs the same work however many processes share the cores,
    # so throughput measurements see contention instead of hiding it.
    end = time.thread_time() + step_ms / 1000
    x = 0
    while time.thread_time() < end:
        x += 1


def _fail(kind: str) -> None:
    if kind == "error":
        raise JobError("synthetic failure requested")
    if kind == "transient":  # a retryable failure (the Hub or a network briefly away)
        raise TransientJobError("synthetic transient failure requested")
    if kind == "oom":
        raise MemoryError("synthetic allocation failure (out of memory)")
    if kind == "crash":
        os._exit(137)
    if kind == "hang":
        while True:
            time.sleep(1)
    if kind == "hang_hard":  # ignores the soft time limit, like a stuck CUDA kernel: only a kill ends it
        while True:
            try:
                time.sleep(1)
            except BaseException:  # noqa: BLE001,S110
                pass


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(ctx: JobContext) -> Any:
    """Do ``steps`` units of work with a progress point after each."""
    p = ctx.params_as(StoredSyntheticParams)
    ballast = bytearray(p.alloc_mb << 20)  # held for the job's lifetime
    for step in range(p.steps):
        if p.fail and step == p.fail_at_step:
            _fail(p.fail)
        _work(p.step_ms, p.mode)
        ctx.progress(step + 1, p.steps)
    if p.fail and p.steps == 0:
        _fail(p.fail)
    result: dict[str, Any] = {"steps": p.steps, "echo": ctx.inputs, "attempt": ctx.attempt, "allocated": len(ballast)}
    if p.report_memory:
        result["rss_bytes"] = rss_bytes()
    if p.result_bytes:
        result["blob"] = "x" * p.result_bytes
    return result
