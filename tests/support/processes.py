"""Real processes for tests: Redis, gpuq workers and the API, each a subprocess on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gpuq.common.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Service:
    """A gpuq service subprocess (``python -m gpuq.cli.main VERB``) with its output in a log file."""

    def __init__(self, verb: str, env: dict[str, str], log_dir: Path, name: str, *args: str,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpuq.cli.main", verb, *args],
            env=env,
            cwd=cwd or ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (Celery parent and its pool children)."""
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(env: dict[str, str], log_dir: Path, name: str, queues: str | None = None,
                 pool: str | None = None, concurrency: int | None = None, cwd: Path | None = None) -> Service:
    """Start a real Celery worker (prefork with one child unless ``pool``/``concurrency`` say otherwise)."""
    args = ["--hostname", f"{name}@%h"] + (["--queues", queues] if queues else [])
    args += (["--pool", pool] if pool else []) + (["--concurrency", str(concurrency)] if concurrency else [])
    return Service("worker", env, log_dir, name, *args, cwd=cwd)


def start_api(env: dict[str, str], log_dir: Path, port: int | None = None,
              cwd: Path | None = None) -> tuple[Service, str]:
    """Start the API under uvicorn and wait for /healthz (``cwd``: its working directory, else the repo's)."""
    port = port or free_port()
    svc = Service(
        "api", {**env, "GPUQ_API_PORT": str(port)}, log_dir, f"api-{port}", "--log-level", "warning", cwd=cwd
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 60, "API /healthz")
    return svc, url


def worker_alive(redis_url: str, node_prefix: str) -> bool:
    """True once a worker whose node name starts with ``node_prefix`` has sent a heartbeat."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = env_prefix()
    return any(
        n.startswith(node_prefix) for n in r.zrangebyscore(f"{prefix}:workers", time.time() - 20, "+inf")
    )


def env_prefix() -> str:
    return os.environ.get("GPUQ_KEY_PREFIX", "gpuq")
