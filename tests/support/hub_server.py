"""A Hugging Face Hub-compatible HTTP server on loopback, for tests that drive the real `huggingface_hub` client.

    with HubServer(tokens={"tok-alice": "alice"}) as hub:
        api = HfApi(endpoint=hub.endpoint, token="tok-alice")
        api.create_repo("alice/out", private=True)
        api.upload_folder(repo_id="alice/out", folder_path=folder)
        assert hub.repo_files("alice/out")["config.json"] == b"{}"

Repos are git-like (real 40-hex commit ids, per-repo history, branches); content lives in a temp directory. Uploads
are always answered "regular" at preupload, so the client never tries LFS or Xet storage. For code that cannot take
an `endpoint=` argument (`ModelCard.push_to_hub`, `transformers`' `push_to_hub`), use
`tests.support.hf_client.point_hf_client_at`; for subprocesses (workers), pass `hub.client_env(hf_home)`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Collection, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

from tests.support.hub_http import Request, Response
from tests.support.hub_routes import dispatch
from tests.support.hub_store import HubError, HubStore

logger = logging.getLogger(__name__)
_CHUNK = 1 << 20


class LoggedRequest(NamedTuple):
    """One request the server saw; the Authorization value is replaced by "<redacted>"."""

    method: str
    path: str
    headers: dict[str, str]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: HubServer) -> None:
        super().__init__(address, _Handler)
        self.hub = hub
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, address = super().get_request()
        with self._open_lock:
            self._open.add(sock)
        return sock, address

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Close kept-alive client connections so their handler threads end with the server."""
        with self._open_lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = (
        True  # headers and body go out in separate writes: avoid the 40 ms delayed-ACK stall
    )
    server: _HTTPServer

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("test hub: " + format, *args)

    def _handle(self) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        body = self._read_body()
        auth = self.headers.get("Authorization")
        hub._record(self.command, url.path, dict(self.headers.items()), auth)
        try:
            user, can_write = hub._authenticate(auth)
            headers = {key.lower(): value for key, value in self.headers.items()}
            request = Request(
                self.command, url.path, parse_qs(url.query), headers, body, user, can_write, hub.endpoint
            )
            response = dispatch(hub.store, request)
        except HubError as exc:
            response = _error_response(exc)
        except Exception as exc:  # a bug in the test hub must surface as a 500, not a hung client
            logger.exception("test hub failed on %s %s", self.command, self.path)
            response = _error_response(HubError(500, f"test hub error: {exc!r}"))
        self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, then the blank line
            pass
        return b"".join(parts)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        size = response.length if response.file is not None else len(response.body)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            self._write_body(response)
        except ConnectionError:
            self.close_connection = True

    def _write_body(self, response: Response) -> None:
        if response.file is None:
            self.wfile.write(response.body)
            return
        with response.file.open("rb") as source:
            source.seek(response.offset)
            left = response.length
            while left > 0 and (chunk := source.read(min(_CHUNK, left))):
                self.wfile.write(chunk)
                left -= len(chunk)


def _error_response(exc: HubError) -> Response:
    response = Response.json({"error": exc.message}, exc.status)
    response.headers["X-Error-Message"] = exc.message.encode("latin-1", "replace").decode("latin-1")
    if exc.code:
        response.headers["X-Error-Code"] = exc.code
    response.headers.update(exc.headers)
    return response


class HubServer:
    """The test Hub: start/stop (or `with`), `.endpoint`, request logs and direct access to repo contents.

    `tokens` maps bearer token -> username; tokens in `read_only_tokens` may read but not write. Content is kept
    under `root` if given (and left there), else in a temp directory removed by `stop()`.
    """

    def __init__(
        self,
        tokens: Mapping[str, str] | None = None,
        *,
        read_only_tokens: Collection[str] = (),
        root: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.tokens = dict(tokens or {})
        self.read_only_tokens = frozenset(read_only_tokens)
        self.requests_log: list[LoggedRequest] = []
        self.seen_auth_headers: list[str] = []
        self._address = (host, port)
        self._root = root
        self._tmp: str | None = None
        self._store: HubStore | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL to hand to `huggingface_hub` (`endpoint=` or `HF_ENDPOINT`), e.g. `http://127.0.0.1:41234`."""
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def store(self) -> HubStore:
        """The repository store (for direct inspection or seeding)."""
        if self._store is None:
            raise RuntimeError("HubServer is not started")
        return self._store

    def start(self) -> Self:
        """Bind, then serve from a daemon thread; returns self."""
        if self._root is None:
            self._tmp = tempfile.mkdtemp(prefix="gpuq-test-hub-")
        self._store = HubStore(self._root or Path(self._tmp or ""))
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and remove the temp directory (if this server made it)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.drop_connections()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = self._thread = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def repo_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Every file of a repo at a branch or commit sha (including the initial `.gitattributes`)."""
        repo = self.store.get(repo_type, repo_id)
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id} on the test hub")
        return self.store.snapshot(repo, revision)

    def head(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> str:
        """The commit sha a branch points at."""
        repo = self.store.get(repo_type, repo_id)
        if repo is None:
            raise KeyError(f"no {repo_type} repo {repo_id} on the test hub")
        return repo.resolve(branch).oid

    def seed_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        repo_type: str = "model",
        private: bool = False,
        message: str = "seed",
    ) -> str:
        """Create the repo if needed (owned by its namespace) and commit `files` to main; returns the commit sha."""
        owner = repo_id.split("/")[0]
        repo = self.store.get(repo_type, repo_id) or self.store.create_repo(
            repo_type, repo_id, owner, private
        )
        return self.store.commit(repo, "main", author=owner, title=message, add=files).oid

    def client_env(self, hf_home: Path) -> dict[str, str]:
        """Environment for a subprocess (e.g. a worker) whose `huggingface_hub` should use this server only."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_XET_CACHE": str(hf_home / "xet"),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])),
        }

    def _authenticate(self, header: str | None) -> tuple[str | None, bool]:
        if header is None:
            return None, False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        token = token.strip()
        return self.tokens[token], token not in self.read_only_tokens

    def _record(self, method: str, path: str, headers: dict[str, str], auth: str | None) -> None:
        redacted = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in headers.items()}
        self.requests_log.append(LoggedRequest(method, path, redacted))
        if auth is not None:
            self.seen_auth_headers.append(auth)
