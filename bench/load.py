"""Load generation and CPU counters for bench/submit.py.

The load generator must cost little CPU: it shares the cores with the API it measures. ``wrk`` (apt install
wrk) is used when it is installed, with a Lua script that sets the request; otherwise a lean asyncio client
(``python -m bench.load``: raw HTTP/1.1 on keep-alive connections, the request bytes built once, only the status
line and Content-Length parsed). Either runs as a child process, so its CPU is read from its own counters.
CPU of a service is read from ``/proc/<pid>/stat`` for the process and all its descendants (a prefork worker's
pool children, uvicorn's worker processes).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process (its threads included)."""
    out = {}
    for pid in pids:
        fields = _stat(pid)
        if fields:
            out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


class TreeCPU:
    """CPU used by a process tree between ``start()`` and ``stop()`` (processes that appear meanwhile count from
    zero; ones that exit keep their last reading)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def start(self) -> TreeCPU:
        self.before = cpu_seconds(tree(self.pid))
        return self

    def stop(self) -> float:
        now = cpu_seconds(tree(self.pid))
        return sum(now.get(p, self.before.get(p, 0.0)) - self.before.get(p, 0.0)
                   for p in set(now) | set(self.before))


@dataclass(frozen=True)
class Load:
    """One load run: requests answered, those answered 2xx, its length and the generator's CPU seconds."""

    requests: int
    accepted: int
    seconds: float
    client_cpu_s: float
    tool: str


def run_load(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float) -> Load:
    """POST ``body`` to ``url`` from ``connections`` keep-alive connections for ``seconds``."""
    if shutil.which("wrk"):
        return _wrk(url, body, headers, connections, seconds)
    with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as f:
        f.write(body)
    cmd = [sys.executable, "-m", "bench.load", url, f.name, str(connections), str(seconds),
           json.dumps(headers)]
    try:
        out, cpu = _child(cmd)
    finally:
        os.unlink(f.name)
    data = json.loads(out)
    return Load(data["requests"], data["accepted"], data["seconds"], cpu, "asyncio")


def _wrk(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float) -> Load:
    lua = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    lua += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(lua) + "\n")
    threads = 1 if connections <= 64 else 2  # one wrk thread drives 64 connections on a fraction of a core
    try:
        out, cpu = _child(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", f.name, url])
    finally:
        os.unlink(f.name)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if total is None:
        raise RuntimeError(f"unexpected wrk output: {out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)  # answered, but not accepted
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}.get(total.group(3), 1.0)
    requests = int(total.group(1))
    return Load(requests, requests - (int(bad.group(1)) if bad else 0), float(total.group(2)) * scale, cpu, "wrk")


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _child(cmd: list[str]) -> tuple[str, float]:
    """Run ``cmd``; (its stdout, its CPU seconds)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {out[-2000:]}")
    return out, usage.ru_utime + usage.ru_stime


async def _client(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    counts = {"requests": 0, "accepted": 0}
    deadline = time.monotonic() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while time.monotonic() < deadline:
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            counts["requests"] += 1
            counts["accepted"] += status_line[9:10] == b"2"
        writer.close()

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    return {**counts, "seconds": time.monotonic() - start}


def main() -> int:
    """``python -m bench.load URL BODY_FILE CONNECTIONS SECONDS HEADERS_JSON``: prints the counts as JSON."""
    parser = argparse.ArgumentParser()
    for name in ("url", "body", "connections", "seconds", "headers"):
        parser.add_argument(name)
    args = parser.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    body = Path(args.body).read_bytes()
    print(json.dumps(run(_client(args.url, body, json.loads(args.headers), int(args.connections),
                                 float(args.seconds)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
