"""``gpuq models``: what this deployment can serve, and the id to put in a job's ``model``."""
from __future__ import annotations

import argparse
from typing import Any

from gpuq.cli import output
from gpuq.cli.commands.common import client_from


def add_parsers(sub: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    """Register ``models``."""
    p = sub.add_parser("models", parents=[parent], formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=epilog, help="list the models you can name in a job (GET /v1/models)")
    p.set_defaults(func=list_models)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def list_models(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        entries = gpuq.models()
    if args.json:
        output.emit_json([e.model_dump(mode="json") for e in entries])
        return output.EXIT_OK
    if not entries:
        print("no models yet: put model directories under GPUQ_MODEL_ROOTS (gpuq up --demo builds some)")
        return output.EXIT_OK
    rows = [[e.id, e.source, e.kind if e.kind != "model" else ",".join(e.tasks) or "-",
             ",".join(e.resident_on) or "-", _size(e.size_bytes)] for e in entries]
    print(output.table(rows, ["ID", "SOURCE", "TASKS", "RESIDENT ON", "SIZE"]))
    return output.EXIT_OK
