"""How the CLI talks back: exit codes, human text vs ``--json``, and errors."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from gpuq.common.errors import GpuqError, ServiceUnavailable, WaitTimeout
from gpuq.common.schemas import JobRecord

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4
EXIT_REFUSED = 5
EXIT_UNAVAILABLE = 6
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, what `yes | head` reports for `yes`

EXIT_CODES_HELP = """\
exit codes:
  0    done (for submit --wait/--watch, watch, get --wait: the job succeeded)
  1    the job failed
  2    bad command line
  3    the job was cancelled
  4    gave up waiting (--timeout); the job goes on
  5    the API refused the request (bad input, bad key, unknown job, quota exceeded)
  6    the API is unreachable or unavailable
  130  interrupted (Ctrl-C)
  141  the reader of the output went away (`gpuq ls | head`)
"""


class UsageError(Exception):
    """A command line that cannot work (exit code 2), found after argparse accepted it."""


def reader_went_away() -> int:
    """stdout's reader closed the pipe (``| head``): stop quietly, as a pipeline's writer should."""
    import os

    # Python flushes stdout once more at exit; point it at /dev/null so that flush cannot fail too.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE_CLOSED


def outcome_code(job: JobRecord) -> int:
    """The exit code a finished (or still running) job stands for."""
    codes = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
    return codes.get(job.status, EXIT_TIMEOUT)


def error_code(exc: GpuqError) -> int:
    """The exit code for an error the API (or the client) raised."""
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, ServiceUnavailable):
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


def report_error(exc: GpuqError, as_json: bool) -> int:
    """Print an error (JSON on stdout for scripts, a sentence on stderr for people); return its exit code."""
    if as_json:
        emit_json({"error": exc.to_dict()})
    where = f" (field: {exc.field})" if exc.field else ""
    print(f"gpuq: {exc.message}{where}", file=sys.stderr)
    return error_code(exc)


def emit_json(value: Any) -> None:
    """One JSON document on its own line."""
    print(json.dumps(value, default=str), flush=True)


def record_json(job: JobRecord) -> dict[str, Any]:
    return job.model_dump(mode="json")


def ago(ts: float | None) -> str:
    """'12s ago', '5m ago', '3h ago'."""
    if ts is None:
        return "-"
    secs = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{secs}s ago"


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain, aligned text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def describe(job: JobRecord) -> str:
    """A readable multi-line summary of a job."""
    t = job.timings
    lines = [f"job       {job.id}", f"status    {job.status}", f"kind      {job.kind} ({job.queue} queue, "
             f"{job.priority} priority)", f"model     {job.model}", f"submitted {ago(t.submitted_at)}"]
    if job.progress:
        lines.append(f"progress  {job.progress.get('done')}/{job.progress.get('total')}")
    if t.run_ms is not None:
        lines.append(f"timings   waited {t.queue_wait_ms or 0:.0f} ms, loaded model "
                     f"{t.model_load_ms or 0:.0f} ms, ran {t.run_ms:.0f} ms")
    if job.worker:
        lines.append(f"worker    {job.worker} (attempt {job.attempts})")
    if job.error:
        lines.append(f"error     {job.error.type}: {job.error.message}")
    if job.artifacts:
        lines.append("artifacts " + ", ".join(f"{a.name} ({a.size} B)" for a in job.artifacts))
    if job.status == "succeeded":
        lines.append("result    " + json.dumps(job.result, indent=2)[:4000].replace("\n", "\n          "))
    return "\n".join(lines)
