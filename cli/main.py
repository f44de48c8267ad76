"""The ``gpuq`` command line: run the services, the local stack, and the demo."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from common.settings import get_settings

    s = get_settings()
    uvicorn.run("api.main:create_app", factory=True, host=args.host or s.api_host, port=args.port or s.api_port,
                log_level=args.log_level, proxy_headers=True, timeout_graceful_shutdown=10)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from celery.utils.nodenames import default_nodename, host_format

    from common import keys
    from common.jobs.registry import all_specs
    from common.settings import get_settings
    from worker.celery_app import app, default_concurrency

    settings = get_settings()
    pool = args.pool or settings.worker_pool
    concurrency = args.concurrency or default_concurrency(pool, settings)
    node = host_format(default_nodename(args.hostname or "gpuq@%h"))
    shared = args.queues.split(",") if args.queues else settings.queues
    shared = shared or sorted({s.queue for s in all_specs()})
    # Each worker also owns a private queue per kind queue: the API routes jobs for models it holds there.
    own = [keys.own_queue(q, node) for q in shared] if settings.affinity_routing else []
    app.conf.worker_pool, app.conf.worker_concurrency = pool, concurrency
    argv = ["worker", "-Q", ",".join(shared + own), "-P", pool, "-c", str(concurrency),
            "--loglevel", args.log_level.upper(), "-n", node, "--without-gossip", "--without-mingle"]
    if settings.task_events:
        argv.append("-E")
    app.worker_main(argv)
    return 0


def _flower(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from worker.celery_app import app

    s = get_settings()
    argv = ["flower", f"--port={args.port or s.flower_port}", f"--address={args.address}"]
    if s.flower_basic_auth is not None:
        argv.append(f"--basic-auth={s.flower_basic_auth.get_secret_value()}")
    app.start(argv)
    return 0


def _up(args: argparse.Namespace) -> int:
    from cli.stack import run_stack

    return run_stack(demo=args.demo, flower=not args.no_flower, once=args.once)


def _demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    return run_demo(api_url=args.api_url, api_key=args.api_key)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per verb)."""
    parser = argparse.ArgumentParser(prog="gpuq", description="gpuq: a job queue for GPU workers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_api)
    p = sub.add_parser("worker", help="run a GPU worker (one per GPU)")
    p.add_argument("--queues", help="comma-separated queues (default: every job kind's queue)")
    p.add_argument("--hostname", help="Celery node name (default gpuq@<host>)")
    p.add_argument("--pool", choices=["prefork", "threads", "solo"],
                   help="prefork (default; image/fine-tune) or threads (inference with dynamic batching)")
    p.add_argument("--concurrency", type=int, help="pool size (default 1; threads: 2 x GPUQ_BATCH_MAX_SIZE)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_worker)
    p = sub.add_parser("flower", help="run Flower (monitoring UI)")
    p.add_argument("--port", type=int)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(func=_flower)
    p = sub.add_parser("up", help="start Redis (embedded if GPUQ_REDIS_URL is unset), API, worker and Flower")
    p.add_argument("--demo", action="store_true", help="build tiny local models and run demo jobs")
    p.add_argument("--no-flower", action="store_true")
    p.add_argument("--once", action="store_true", help="with --demo: stop the stack after the demo")
    p.set_defaults(func=_up)
    p = sub.add_parser("demo", help="run demo jobs against a running API")
    p.add_argument("--api-url", default=None)
    p.add_argument("--api-key", default=None)
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gpuq`` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
