"""``gpuq up``: the whole stack on one machine, with an embedded Redis when none is configured."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import httpx

from gpuq.common.embedded_redis import EmbeddedRedis
from gpuq.common.settings import get_settings


def _spawn(verb: str, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gpuq.cli.main", verb, *extra], env=env,
                            start_new_session=True)


def _wait_ready(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def stack_env(redis_url: str, api_key: str | None) -> dict[str, str]:
    """Environment for the stack's child processes."""
    s = get_settings()
    env = dict(os.environ)
    env["GPUQ_REDIS_URL"] = redis_url
    data = s.data_dir.resolve()
    env.setdefault("GPUQ_ARTIFACT_DIR", str(s.artifact_dir.resolve()))
    roots = [str(p) for p in s.model_roots] + [str(data / "models")]
    try:
        from gpuq.worker.devmodels import packaged_minilm_path

        roots.append(str(packaged_minilm_path()))
    except Exception:  # noqa: BLE001 - the packaged model is optional
        pass
    env["GPUQ_MODEL_ROOTS"] = os.pathsep.join(roots)
    if api_key:
        env["GPUQ_API_KEYS"] = f"dev:{api_key}"
    # /generate runs the demo's tiny GPT-2 unless the operator chose a model.
    env.setdefault("GPUQ_GENERATE_MODEL", str(data / "models" / "gpt2"))
    return env


def run_stack(demo: bool, flower: bool, once: bool = False) -> int:
    """Start everything, print where it is, and stop it all on Ctrl-C (or after the demo with ``once``)."""
    s = get_settings()
    embedded = None if s.redis_url else EmbeddedRedis(s.data_dir.resolve() / "redis").start()
    redis_url = s.redis_url or embedded.url  # type: ignore[union-attr]
    api_key = None if s.api_keys else f"dev-{secrets.token_urlsafe(18)}"
    env = stack_env(redis_url, api_key)
    api_url = f"http://{s.api_host}:{s.api_port}"
    procs = [_spawn("api", env), _spawn("worker", env), _spawn("webhooks", env)]
    if flower:
        procs.append(_spawn("flower", env))
    try:
        if not _wait_ready(api_url, timeout=120):
            print("gpuq: the stack did not become ready within 120 s", file=sys.stderr)
            return 1
        print(f"\ngpuq is up\n  API     {api_url}  (docs: {api_url}/docs)\n  Redis   {redis_url}"
              f"{' (embedded)' if embedded else ''}")
        if flower:
            print(f"  Flower  http://127.0.0.1:{s.flower_port}")
        if api_key:
            print(f"  API key {api_key}   (tenant 'dev'; set GPUQ_API_KEYS to choose your own)")
        if demo:
            from gpuq.cli.demo import run_demo

            code = run_demo(api_url, api_key or next(iter(s.api_keys)))
            if once:
                return code
        print("\nPress Ctrl-C to stop.")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("gpuq: a service exited; stopping the stack", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ngpuq: stopping")
        return 0
    finally:
        _stop(procs)
        if embedded:
            embedded.stop()
