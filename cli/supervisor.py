"""Run a set of service processes: logs to files, restart on unexpected exit (within a limit), stop in order.

Each service runs in a session of its own, so a Ctrl-C at the terminal reaches only ``gpuq up``, which then
stops the services itself, in order, within a bounded time: the terminal's SIGINT reaching every process at
once is how Redis used to die before the services that needed it to shut down cleanly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

RESTART_LIMIT = 5  # restarts of one service within RESTART_WINDOW_S before the stack gives up
RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 20.0  # SIGTERM to SIGKILL; the worker's soft shutdown is configured shorter (topology.py)


@dataclass
class ServiceSpec:
    """One service: its name (also its log file's), its ``gpuq`` verb and arguments, its environment."""

    name: str
    argv: list[str]
    env: dict[str, str]


@dataclass
class Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    log: IO[bytes] | None
    restarts: deque[float] = field(default_factory=deque)


class GaveUp(Exception):
    """A service kept exiting: more than RESTART_LIMIT restarts within RESTART_WINDOW_S."""

    def __init__(self, name: str, log: Path | None, code: int | None) -> None:
        where = f"; its log: {log}" if log else ""
        super().__init__(f"service {name!r} exited {RESTART_LIMIT + 1} times within {RESTART_WINDOW_S:g} s "
                         f"(last exit code {code}){where}")


class Supervisor:
    """Starts services, restarts the ones that exit unexpectedly, and stops them all."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir  # None: services write to this terminal (--verbose)
        self.running: list[Running] = []

    def log_path(self, name: str) -> Path | None:
        """Where a service's output goes."""
        return self.log_dir / f"{name}.log" if self.log_dir else None

    def start(self, spec: ServiceSpec) -> None:
        """Start one service (its output appended to its log)."""
        self.running.append(self._spawn(spec))

    def _spawn(self, spec: ServiceSpec, restarts: deque[float] | None = None) -> Running:
        path = self.log_path(spec.name)
        log = path.open("ab") if path else None
        proc = subprocess.Popen([sys.executable, "-m", "gpuq.cli.main", *spec.argv], env=spec.env,
                                stdout=log, stderr=subprocess.STDOUT if log else None, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        return Running(spec, proc, log, restarts if restarts is not None else deque())

    def pids(self) -> list[int]:
        """The services' process ids (each is also its process group's)."""
        return [r.proc.pid for r in self.running]

    def check(self) -> list[str]:
        """Restart services that exited; the names restarted. Raises GaveUp past the restart limit."""
        restarted = []
        for i, run in enumerate(self.running):
            code = run.proc.poll()
            if code is None:
                continue
            now = time.monotonic()
            while run.restarts and now - run.restarts[0] > RESTART_WINDOW_S:
                run.restarts.popleft()
            self._close(run)
            if len(run.restarts) >= RESTART_LIMIT:
                raise GaveUp(run.spec.name, self.log_path(run.spec.name), code)
            run.restarts.append(now)
            self._note(run.spec.name, f"exited with code {code}; restarting it "
                       f"({len(run.restarts)} of {RESTART_LIMIT} restarts allowed within {RESTART_WINDOW_S:g} s)")
            self.running[i] = self._spawn(run.spec, run.restarts)
            restarted.append(run.spec.name)
        return restarted

    def _note(self, name: str, text: str) -> None:
        print(f"gpuq: {name} {text}", file=sys.stderr, flush=True)
        path = self.log_path(name)
        if path:
            with path.open("a") as fh:
                fh.write(f"--- gpuq up: {name} {text}\n")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every service's process group at once, wait up to ``grace_s``, SIGKILL what is left."""
        for run in self.running:
            _signal_group(run.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for run in self.running:
            try:
                run.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self._note(run.spec.name, f"did not stop within {grace_s:g} s; killing it")
            # Pool children may outlive their parent: the whole group goes, whatever the parent did.
            _signal_group(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
            self._close(run)

    def _close(self, run: Running) -> None:
        if run.log:
            run.log.close()
            run.log = None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
