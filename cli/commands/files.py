"""``gpuq files upload|ls``: data sets and images that jobs name by ``file_id``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gpuq.cli import output
from gpuq.cli.commands.common import client_from


def add_parsers(sub: Any, parent: argparse.ArgumentParser, epilog: str) -> None:
    """Register ``files`` and its sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("files", formatter_class=fmt, epilog=epilog,
                       help="upload data sets (csv, jsonl, parquet) and images; list your files")
    verbs = p.add_subparsers(dest="files_command", required=True)
    q = verbs.add_parser("upload", parents=[parent], formatter_class=fmt, epilog=epilog,
                         help="upload a file; prints its id (use it as params.data.file_id)")
    q.add_argument("path", type=Path)
    q.add_argument("-q", "--quiet", action="store_true", help="print only the file id")
    q.set_defaults(func=upload)
    q = verbs.add_parser("ls", parents=[parent], formatter_class=fmt, epilog=epilog, help="list your files")
    q.set_defaults(func=list_files)


def upload(args: argparse.Namespace) -> int:
    if not args.path.is_file():
        raise output.UsageError(f"no such file: {args.path}")
    with client_from(args) as gpuq:
        info = gpuq.upload_file(args.path)
    if args.json:
        output.emit_json(info)
    elif args.quiet:
        print(info["id"])
    else:
        print(f"uploaded {info['name']} as {info['id']} ({info['format']}, {info.get('rows')} rows, "
              f"columns {', '.join(info.get('columns') or []) or '-'})")
    return output.EXIT_OK


def list_files(args: argparse.Namespace) -> int:
    with client_from(args) as gpuq:
        files = gpuq.list_files()
    if args.json:
        output.emit_json(files)
    elif not files:
        print("no files yet: upload one with `gpuq files upload PATH`")
    else:
        rows = [[f["id"], f["name"], f["format"], str(f.get("rows")), str(f["size"]), output.ago(f["created_at"])]
                for f in files]
        print(output.table(rows, ["ID", "NAME", "FORMAT", "ROWS", "BYTES", "UPLOADED"]))
    return output.EXIT_OK
