"""``gpuq artifacts ls|download``: what a job produced."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gpuq.cli import output
from gpuq.cli.commands.common import client_from


def add_parsers(sub: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    """Register ``artifacts`` and its sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("artifacts", formatter_class=fmt, epilog=epilog,
                       help="list or download a job's artifacts")
    verbs = p.add_subparsers(dest="artifacts_command", required=True)
    q = verbs.add_parser("ls", parents=[parent], formatter_class=fmt, epilog=epilog,
                         help="list a job's artifacts")
    q.add_argument("job_id")
    q.set_defaults(func=list_artifacts)
    q = verbs.add_parser("download", parents=[parent], formatter_class=fmt, epilog=epilog,
                         help="download artifacts (all, or the names given), checking their sha256")
    q.add_argument("job_id")
    q.add_argument("names", nargs="*", metavar="NAME", help="artifact names (default: all)")
    q.add_argument("-o", "--output-dir", type=Path, default=Path("."), help="where to put them (default: .)")
    q.set_defaults(func=download)


def list_artifacts(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        infos = gpuq.artifacts(args.job_id)
    if args.json:
        output.emit_json([a.model_dump() for a in infos])
    elif not infos:
        print(f"job {args.job_id} has no artifacts")
    else:
        print(output.table([[a.name, str(a.size), a.content_type, a.sha256[:16]] for a in infos],
                           ["NAME", "BYTES", "TYPE", "SHA256"]))
    return output.EXIT_OK


def download(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        available = {a.name for a in gpuq.artifacts(args.job_id)}
        wanted = set(args.names) & available if args.names else available
        if not wanted:
            status = gpuq.get(args.job_id).status
            what = "none of " + ", ".join(map(repr, args.names)) if args.names else "nothing"
            print(f"gpuq: job {args.job_id} ({status}) has {what} to download"
                  + (f"; it has {', '.join(sorted(available))}" if available else ""), file=sys.stderr)
            if args.json:
                output.emit_json({"downloaded": [], "missing": sorted(args.names)})
            return output.EXIT_REFUSED
        args.output_dir.mkdir(parents=True, exist_ok=True)
        paths = gpuq.download_artifacts(args.job_id, args.output_dir, sorted(wanted))
    missing = sorted(set(args.names) - {p.name for p in paths})
    if args.json:
        output.emit_json({"downloaded": [str(p) for p in paths], "missing": missing})
    else:
        for path in paths:
            print(path)
        for name in missing:
            print(f"gpuq: job {args.job_id} has no artifact {name!r}", file=sys.stderr)
    return output.EXIT_REFUSED if missing else output.EXIT_OK
