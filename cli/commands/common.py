"""What the client-side commands share: connection options and building a client from them."""
from __future__ import annotations

import argparse

from gpuq.client import Client, RetryPolicy

# A person at a terminal hears about an unreachable API within a couple of seconds.
CLI_RETRY = RetryPolicy(attempts=3, backoff_s=0.5, backoff_max_s=2.0)


def connection_options() -> argparse.ArgumentParser:
    """Options every command that talks to the API accepts (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--api-url", metavar="URL", help="the gpuq API (default: $GPUQ_API_URL or "
                       "http://127.0.0.1:8000)")
    group.add_argument("--api-key", metavar="KEY", help="your API key (default: $GPUQ_API_KEY)")
    group.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return parent


def client_from(args: argparse.Namespace) -> Client:
    """A client configured from the command line (falling back to the environment)."""
    return Client(args.api_url, args.api_key, retry=CLI_RETRY)
