"""Job commands: ``submit``, ``watch``, ``logs``, ``get``, ``ls``, ``cancel``."""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from gpuq.cli import output
from gpuq.cli.commands.common import client_from
from gpuq.cli.progress import Watcher, event_time
from gpuq.client import Client
from gpuq.common.schemas import TERMINAL_STATUSES, JobEvent, JobRecord

SUBMIT_EXAMPLES = """\
examples:
  gpuq submit --kind inference --model gpt2 --input "Once upon a time" \\
       --param task=text-generation --param max_new_tokens=32 --param stream=true --watch
  gpuq submit -f job.yaml --priority high --wait --timeout 300
  gpuq submit -f job.json --json | jq -r .id

A job file (YAML or JSON) holds the request body: kind, model, inputs, params, priority, webhook.
Flags override it; a --param value is JSON when it parses (16, 0.7, true, ["a","b"]), else text.
"""


def add_parsers(sub: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    """Register the job commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("submit", parents=[parent], formatter_class=fmt, help="submit a job",
                       epilog=SUBMIT_EXAMPLES + "\n" + epilog,
                       description="Submit a job; prints its id (or, with --wait/--watch, waits for it and "
                       "exits with its outcome).")
    p.add_argument("-f", "--file", type=Path, help="job file (YAML or JSON) with the request body")
    p.add_argument("--kind", help="job kind, e.g. inference (see the API's /v1/kinds)")
    p.add_argument("--model", help="a model id from `gpuq models`: a name under GPUQ_MODEL_ROOTS or a Hub id")
    p.add_argument("--input", dest="inputs", action="append", metavar="TEXT",
                   help="an input text; repeat for several")
    p.add_argument("--inputs-json", metavar="JSON", help="inputs as JSON (any shape the kind accepts)")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="a job parameter; repeat for several")
    p.add_argument("--priority", choices=["high", "normal", "low"])
    p.add_argument("--webhook", metavar="URL", help="POST the job's events to this URL (signed)")
    p.add_argument("--webhook-event", dest="webhook_events", action="append", metavar="EVENT",
                   help="event to deliver (default: completed, failed, cancelled); repeat for several")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="reuse to make a retried submit return the same job")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    when.add_argument("--watch", action="store_true",
                      help="show live progress and streamed text until it ends")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="with --wait/--watch: give up after this long")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    p.set_defaults(func=submit)

    p = sub.add_parser("watch", parents=[parent], formatter_class=fmt, epilog=epilog,
                       help="follow a job live: progress bar, streamed text, outcome",
                       description="Follow a job until it ends: a progress bar (steps, loss, ETA) and its "
                       "streamed text. With --json, prints each event as one JSON line.")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long (exit code 4)")
    p.set_defaults(func=watch)

    p = sub.add_parser("logs", parents=[parent], formatter_class=fmt, epilog=epilog,
                       help="print a job's events (lifecycle, progress, logs, output)")
    p.add_argument("job_id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events until the job ends")
    p.set_defaults(func=logs)

    p = sub.add_parser("get", parents=[parent], formatter_class=fmt, epilog=epilog, help="show one job")
    p.add_argument("job_id")
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait up to this long for the job to finish")
    p.set_defaults(func=get)

    p = sub.add_parser("ls", parents=[parent], formatter_class=fmt, epilog=epilog, help="list your jobs")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job ids")
    p.set_defaults(func=ls)

    p = sub.add_parser("cancel", parents=[parent], formatter_class=fmt, epilog=epilog, help="cancel a job")
    p.add_argument("job_id")
    p.set_defaults(func=cancel)


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body from a job file and flags (flags win; params merge)."""
    body: dict[str, Any] = {}
    if args.file:
        try:
            loaded = yaml.safe_load(args.file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise output.UsageError(f"cannot read job file {args.file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise output.UsageError(f"{args.file} must hold a mapping (kind, model, inputs, params, ...)")
        body.update(loaded)
    for key in ("kind", "model", "priority"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.inputs_json is not None:
        try:
            body["inputs"] = json.loads(args.inputs_json)
        except ValueError as exc:
            raise output.UsageError(f"--inputs-json is not JSON: {exc}") from None
    elif args.inputs:
        body["inputs"] = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    params = dict(body.get("params") or {})
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise output.UsageError(f"--param wants KEY=VALUE, got {item!r}")
        params[key] = _value(value)
    body["params"] = params
    if args.webhook:
        events = {"events": args.webhook_events} if args.webhook_events else {}
        body["webhook"] = {"url": args.webhook, **events}
    missing = [k for k in ("kind", "model") if not body.get(k)]
    if missing:
        flags = " and ".join("--" + m for m in missing)
        raise output.UsageError(f"submit needs {flags} (or a job file with them)")
    return body


def _value(text: str) -> Any:
    """A --param value: JSON when it parses (16, 0.7, true, null, ["a"]), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def submit(args: argparse.Namespace) -> int:
    body = job_body(args)
    with client_from(args) as gpuq:
        job = gpuq.submit(body["kind"], body["model"], body.get("inputs"), body.get("params"),
                          priority=body.get("priority", "normal"), webhook=body.get("webhook"),
                          idempotency_key=args.idempotency_key)
        if args.watch:
            return _watch(gpuq, job.id, args.timeout, args.json)
        if args.wait:
            try:
                return _finish(gpuq.wait(job.id, timeout=args.timeout), args.json)
            except KeyboardInterrupt:
                print(f"\ngpuq: job {job.id} keeps running; `gpuq watch {job.id}` to re-attach, "
                      f"`gpuq cancel {job.id}` to stop it", file=sys.stderr)
                return output.EXIT_INTERRUPTED
    if args.json:
        output.emit_json(output.record_json(job))
    elif args.quiet:
        print(job.id)
    else:
        print(f"submitted job {job.id} ({job.status})\n  follow it: gpuq watch {job.id}\n  "
              f"its record: gpuq get {job.id}")
    return output.EXIT_OK


def watch(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        return _watch(gpuq, args.job_id, args.timeout, args.json)


def _watch(gpuq: Client, job_id: str, timeout: float | None, as_json: bool) -> int:
    try:
        return _follow(gpuq, job_id, timeout, as_json)
    except KeyboardInterrupt:
        # Stopping to watch is not cancelling: say so, and how to do either.
        print(f"\ngpuq: job {job_id} keeps running; `gpuq watch {job_id}` to re-attach, "
              f"`gpuq cancel {job_id}` to stop it", file=sys.stderr)
        return output.EXIT_INTERRUPTED


def _follow(gpuq: Client, job_id: str, timeout: float | None, as_json: bool) -> int:
    view = Watcher()
    deadline = None if timeout is None else time.monotonic() + timeout
    for event in _events_until(gpuq, job_id, deadline):
        if event is None:
            job = gpuq.get(job_id)
            print(f"gpuq: gave up after {timeout:g} s; job {job_id} is still {job.status}", file=sys.stderr)
            return output.EXIT_TIMEOUT
        if as_json:
            output.emit_json(event.model_dump(mode="json"))
        else:
            view.on_event(event)
    job = gpuq.get(job_id)
    if not as_json:
        _summary(job, streamed=view.had_output)
    return output.outcome_code(job)


def _events_until(gpuq: Client, job_id: str, deadline: float | None) -> Iterator[JobEvent | None]:
    """The job's events, read on a helper thread so a deadline can interrupt the wait (then None)."""
    box: queue.Queue[JobEvent | BaseException | None] = queue.Queue()

    def pump() -> None:
        try:
            for event in gpuq.events(job_id):
                box.put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box.put(exc)
        box.put(None)

    threading.Thread(target=pump, name="gpuq-watch", daemon=True).start()
    while True:
        try:
            item = box.get(timeout=None if deadline is None else max(deadline - time.monotonic(), 0))
        except queue.Empty:
            yield None
            return
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _summary(job: JobRecord, streamed: bool) -> None:
    t = job.timings
    took = f" in {(t.finished_at - t.submitted_at):.1f} s" if t.finished_at and t.submitted_at else ""
    print(f"job {job.id} {job.status}{took}", file=sys.stderr)
    if job.status == "succeeded" and not streamed:
        print(json.dumps(job.result, indent=2))


def _finish(job: JobRecord, as_json: bool) -> int:
    if as_json:
        output.emit_json(output.record_json(job))
    else:
        print(output.describe(job))
    return output.outcome_code(job)


def logs(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        for event in gpuq.events(args.job_id, follow=args.follow):
            if args.json:
                output.emit_json(event.model_dump(mode="json"))
                continue
            stamp = _stamp(event_time(event))
            print(f"{stamp}  {event.type:<9} {_event_text(event.type, event.data)}", flush=True)
    return output.EXIT_OK


def _stamp(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _event_text(kind: str, data: dict[str, Any]) -> str:
    if kind == "progress":
        extra = {k: v for k, v in data.items() if k not in ("done", "total")}
        return f"{data.get('done')}/{data.get('total')}" + (f" {json.dumps(extra)}" if extra else "")
    if kind == "log":
        return str(data.get("message", ""))
    if kind == "failed":
        error = data.get("error") or {}
        return f"{error.get('type')}: {error.get('message')}"
    return json.dumps(data) if data else ""


def get(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        job = gpuq.wait(args.job_id, timeout=args.wait) if args.wait else gpuq.get(args.job_id)
    if args.json:
        output.emit_json(output.record_json(job))
    else:
        print(output.describe(job))
    return output.outcome_code(job) if args.wait else output.EXIT_OK


def ls(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        jobs = gpuq.list(status=args.status, kind=args.kind, limit=args.limit)
    if args.json:
        output.emit_json([output.record_json(j) for j in jobs])
        return output.EXIT_OK
    if args.quiet:
        print("\n".join(j.id for j in jobs))
        return output.EXIT_OK
    if not jobs:
        print("no jobs yet: submit one with `gpuq submit --help`")
        return output.EXIT_OK
    rows = [[j.id, j.kind, str(j.params.get("task") or "-"), j.status, j.priority, _short(j.model),
             output.ago(j.timings.submitted_at)] for j in jobs]
    print(output.table(rows, ["ID", "KIND", "TASK", "STATUS", "PRIORITY", "MODEL", "SUBMITTED"]))
    return output.EXIT_OK


def _short(model: str, width: int = 40) -> str:
    return model if len(model) <= width else "..." + model[-(width - 3):]


def cancel(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        job = gpuq.cancel(args.job_id)
    if args.json:
        output.emit_json(output.record_json(job))
    elif job.status in TERMINAL_STATUSES:
        print(f"job {job.id} {job.status}")
    else:
        print(f"job {job.id}: cancellation requested; it stops at its next progress point")
    return output.EXIT_OK
