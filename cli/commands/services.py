"""Commands that run gpuq's processes: ``api``, ``worker``, ``webhooks``, ``flower``, ``ui``, ``up``,
``demo``; and ``env``, the export line for the stack ``up`` runs."""
from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    """Register the service commands."""
    p = sub.add_parser("up", help="run everything locally: Redis (embedded if GPUQ_REDIS_URL is unset), API, "
                       "worker, webhook sender, Flower")
    p.add_argument("--demo", action="store_true", help="build tiny local models and run demo jobs")
    p.add_argument("--no-flower", action="store_true", help="do not start Flower")
    p.add_argument("--once", action="store_true", help="with --demo: stop the stack after the demo")
    p.add_argument("--verbose", action="store_true",
                   help="services log to this terminal instead of var/logs/<service>.log")
    p.set_defaults(func=up)
    p = sub.add_parser("env", help="print the export line for the local stack (eval \"$(gpuq env)\")")
    p.set_defaults(func=env)
    p = sub.add_parser("demo", help="run demo jobs against a running API")
    p.add_argument("--api-url", default=None)
    p.add_argument("--api-key", default=None)
    p.set_defaults(func=demo)
    p = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--log-level", default="info")
    p.add_argument("--workers", type=int, help="API processes sharing the port (default: GPUQ_API_WORKERS, 1); "
                   "each has its own event loop, submit batching and result subscription")
    p.set_defaults(func=api)
    p = sub.add_parser("worker", help="run a GPU worker (one per GPU)")
    p.add_argument("--queues", help="comma-separated queues (default: every job kind's queue)")
    p.add_argument("--hostname", help="Celery node name (default gpuq@<host>)")
    p.add_argument("--pool", choices=["prefork", "threads", "solo"],
                   help="prefork (default; image/fine-tune) or threads (inference with dynamic batching)")
    p.add_argument("--concurrency", type=int, help="pool size (default 1; threads: 2 x GPUQ_BATCH_MAX_SIZE)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=worker)
    p = sub.add_parser("webhooks", help="run the webhook sender (delivers job events to webhook URLs)")
    p.set_defaults(func=webhooks)
    p = sub.add_parser("flower", help="run Flower (monitoring UI)")
    p.add_argument("--port", type=int)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(func=flower)
    p = sub.add_parser("ui", help="run the demo web UI (Gradio) against the API")
    p.add_argument("--api-url", help="the gpuq API (default: $GPUQ_API_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key the UI submits with (default: $GPUQ_API_KEY)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: GPUQ_UI_PORT (7860)")
    p.add_argument("--model", help="model preselected for text jobs (default: GPUQ_GENERATE_MODEL)")
    p.set_defaults(func=ui)


def api(args: argparse.Namespace) -> int:
    import uvicorn
    from gpuq.common.settings import get_settings

    s = get_settings()
    uvicorn.run("gpuq.api.main:create_app", factory=True, host=args.host or s.api_host,
                port=args.port or s.api_port, log_level=args.log_level, proxy_headers=True,
                timeout_graceful_shutdown=10, workers=args.workers or s.api_workers)
    return 0


def worker(args: argparse.Namespace) -> int:
    import os

    # SIGTERM (Kubernetes, docker stop) starts Celery's soft shutdown: the running job gets
    # GPUQ_WORKER_SOFT_SHUTDOWN_S to finish or hand itself back, then unacked messages are restored at once.
    # billiard reads this when it is first imported, so it must be set before Celery loads.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    # Idle OpenMP threads sleep instead of spinning: a CPU worker shares its cores with its own batching
    # threads and Redis calls (and often the API), and spinning intra-op threads burned a third of the
    # worker's CPU there (bench/inference.py). Read when torch first loads; an operator's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from celery.utils.nodenames import default_nodename, host_format
    from gpuq.common import keys
    from gpuq.common.jobs.registry import all_specs
    from gpuq.common.settings import get_settings
    from gpuq.worker.main import app, default_concurrency

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


def webhooks(args: argparse.Namespace) -> int:
    from gpuq.common.settings import get_settings
    from gpuq.common.webhooks.sender import run_sender

    return run_sender(get_settings())


def flower(args: argparse.Namespace) -> int:
    from gpuq.common.settings import get_settings
    from gpuq.worker.celery_app import app

    s = get_settings()
    argv = ["flower", f"--port={args.port or s.flower_port}", f"--address={args.address}"]
    if s.flower_basic_auth is not None:
        argv.append(f"--basic-auth={s.flower_basic_auth.get_secret_value()}")
    app.start(argv)
    return 0


def ui(args: argparse.Namespace) -> int:
    from gpuq.common.settings import get_settings
    from gpuq.ui.app import serve

    s = get_settings()
    return serve(api_url=args.api_url, api_key=args.api_key, host=args.host, port=args.port or s.ui_port,
                 model=args.model or s.generate_model)


def up(args: argparse.Namespace) -> int:
    from gpuq.cli.stack import run_stack

    return run_stack(demo=args.demo, flower=not args.no_flower, once=args.once, verbose=args.verbose)


def env(args: argparse.Namespace) -> int:
    """The ``export`` line `gpuq up` prints last, rebuilt from the settings and the dev key under var/."""
    import sys

    from gpuq.cli import devstate
    from gpuq.common.settings import get_settings

    s = get_settings()
    path = devstate.api_key_path(s.data_dir.resolve())
    if s.api_keys:
        key = next(iter(s.api_keys))
    elif path.is_file():
        key = path.read_text().strip()
    else:
        print(f"gpuq: no dev key at {path} yet: start the stack with `gpuq up` first", file=sys.stderr)
        return 1
    print(f"export GPUQ_API_URL=http://{s.api_host}:{s.api_port} GPUQ_API_KEY={key}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from gpuq.cli.demo import run_demo

    return run_demo(api_url=args.api_url, api_key=args.api_key)
