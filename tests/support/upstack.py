"""A real ``gpuq up`` in a directory of its own (its own var/, free ports), for the tests that start one."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import psutil
from gpuq.common.embedded_redis import free_port

from tests.support.processes import ROOT


def up_env(**extra: str) -> dict[str, str]:
    """The session's environment for a private `gpuq up`: no Redis, keys or roots of the session's, free ports."""
    drop = ("GPUQ_REDIS_URL", "GPUQ_API_KEYS", "GPUQ_MODEL_ROOTS", "GPUQ_ARTIFACT_DIR", "GPUQ_DATA_DIR",
            "GPUQ_GENERATE_MODEL", "GPUQ_WEBHOOK_SECRETS", "GPUQ_WEBHOOK_ALLOWLIST", "GPUQ_FILES_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"GPUQ_API_PORT": str(free_port()), "GPUQ_FLOWER_PORT": str(free_port()),
                "GPUQ_WORKER_METRICS_PORT": "0", "PYTHONPATH": str(ROOT), **extra})
    return env


class Up:
    """``gpuq up`` as a user starts it, in ``cwd``; its output in files, every process it started tracked.

    ``command`` (a shell line) starts it some other way, e.g. ``./scripts/up``, in a process group of its own
    as a terminal would; signals then go to that group, as Ctrl-C does."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None, command: str | None = None,
                 logs: Path | None = None) -> None:
        self.cwd, self.env = cwd, env or up_env()
        cwd.mkdir(parents=True, exist_ok=True)
        logs = logs or cwd
        self.out_path, self.err_path = logs / "up.out", logs / "up.err"
        self._out: IO[bytes] = self.out_path.open("wb")
        self._err: IO[bytes] = self.err_path.open("wb")
        argv = ["bash", "-c", command] if command else [sys.executable, "-m", "gpuq.cli.main", "up", *args]
        self.group = command is not None
        self.proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, start_new_session=self.group)
        self.seen: dict[int, psutil.Process] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['GPUQ_API_PORT']}"

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_banner(self, timeout: float = 240) -> str:
        """The export line, once the banner is out; every process of the stack recorded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"^export GPUQ_API_URL=\S+ GPUQ_API_KEY=(\S+)$", self.out(), re.MULTILINE)
            if match:
                self.track()
                return match.group(1)
            assert self.proc.poll() is None, f"gpuq up exited {self.proc.returncode}: {self.err()}"
            time.sleep(0.3)
        raise TimeoutError(f"no banner within {timeout} s: {self.out()} {self.err()}")

    def track(self) -> None:
        """Remember every process below `gpuq up` now (services, their pool children, Redis)."""
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            self.seen[child.pid] = child

    def signal(self, sig: int) -> float:
        """Send ``sig`` to `gpuq up` alone (as a supervisor would) and return how long it took to exit."""
        self.track()
        start = time.monotonic()
        if self.group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        self.proc.wait(90)
        return time.monotonic() - start

    def left_behind(self) -> list[str]:
        """Processes of the stack still running after `gpuq up` exited."""
        alive = []
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
        return alive

    def kill_all(self) -> None:
        """Cleanup after a failed test: nothing of this stack may outlive it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for proc in self.seen.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self._out.close()
        self._err.close()
