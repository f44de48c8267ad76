"""The ``gpuq`` command line: submit and follow jobs, and run gpuq's services."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gpuq.cli import output
from gpuq.cli.commands import artifacts, files, jobs, models, services
from gpuq.cli.commands.common import connection_options

DESCRIPTION = """\
gpuq: a job queue for GPU workers.

Run it all locally:      gpuq up --demo          (then, in another shell: eval "$(gpuq env)")
What can I run?          gpuq models
Submit and follow a job: gpuq submit --kind inference --model MODEL --input "text" \\
                              --param task=text-generation --watch
See your jobs:           gpuq ls

Commands that talk to the API read GPUQ_API_URL and GPUQ_API_KEY (or --api-url/--api-key).
Every command has its own --help.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per verb)."""
    parser = argparse.ArgumentParser(prog="gpuq", description=DESCRIPTION, epilog=output.EXIT_CODES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = connection_options()
    jobs.add_parsers(sub, parent, output.EXIT_CODES_HELP)
    artifacts.add_parsers(sub, parent, output.EXIT_CODES_HELP)
    files.add_parsers(sub, parent, output.EXIT_CODES_HELP)
    models.add_parsers(sub, parent, output.EXIT_CODES_HELP)
    services.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gpuq`` console script."""
    from gpuq.common.errors import GpuqError

    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except GpuqError as exc:
        return output.report_error(exc, getattr(args, "json", False))
    except output.UsageError as exc:
        print(f"gpuq: {exc}", file=sys.stderr)
        return output.EXIT_USAGE
    except KeyboardInterrupt:
        print("\ngpuq: interrupted", file=sys.stderr)
        return output.EXIT_INTERRUPTED
    except BrokenPipeError:
        return output.reader_went_away()


if __name__ == "__main__":
    sys.exit(main())
