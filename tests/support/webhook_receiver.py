"""A real HTTP receiver for webhooks on loopback: records deliveries, can fail, stall, go down and come back."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gpuq.common.embedded_redis import free_port


@dataclass
class Delivery:
    at: float
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)  # type: ignore[no-any-return]


class Receiver:
    """``fail_next`` answers that many requests with 500; ``stall_s`` delays each answer."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Delivery] = []
        self.attempts: list[Delivery] = []
        self.fail_next = 0
        self.stall_s = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen = Delivery(time.time(), self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
                status = receiver._record(seen)
                time.sleep(receiver.stall_s)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _record(self, seen: Delivery) -> int:
        with self._lock:
            self.attempts.append(seen)
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500
            self.received.append(seen)
            return 204

    def wait_for(self, predicate: Any, timeout: float = 30) -> list[Delivery]:
        """Wait until ``predicate(received)`` holds; returns the deliveries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                got = list(self.received)
            if predicate(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"webhook receiver: condition not met in {timeout}s; got {[d.body for d in got]}")
