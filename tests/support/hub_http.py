"""Request/response types and access rules shared by the test Hub's endpoint functions."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.hub_store import HubError, HubStore, Repo

URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}


@dataclass(frozen=True)
class Request:
    """An authenticated request, as the route functions see it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    user: str | None
    can_write: bool
    endpoint: str

    def json(self) -> Any:
        """The body parsed as JSON (400 if it is not)."""
        try:
            return json.loads(self.body or b"{}")
        except ValueError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from exc

    def flag(self, name: str) -> bool:
        """Whether a query parameter is set to a true value (`1`, `true`)."""
        return self.query.get(name, ["0"])[-1].lower() in ("1", "true")


@dataclass
class Response:
    """What the HTTP layer sends back: a body in memory, or a byte range of a blob on disk."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    offset: int = 0
    length: int = 0

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


Handler = Callable[[HubStore, Request, dict[str, str]], Response]


def repo_url(endpoint: str, repo: Repo) -> str:
    """The repo's web URL (what `create_repo` returns and `RepoUrl` parses)."""
    return f"{endpoint}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"


def _not_found(req: Request) -> HubError:
    # Like the Hub: the same answer for "missing" and "private, not yours", 401 when anonymous.
    return HubError(401 if req.user is None else 404, "Repository not found", code="RepoNotFound")


def readable(store: HubStore, req: Request, kind: str, repo_id: str) -> Repo:
    """The repo if this request may read it, else the Hub's RepoNotFound."""
    repo = store.get(_PLURAL.get(kind, kind), repo_id)
    if repo is None or (repo.private and req.user != repo.owner):
        raise _not_found(req)
    return repo


def writable(store: HubStore, req: Request, kind: str, repo_id: str) -> Repo:
    """The repo if this request may write to it: 401 anonymous, 404 invisible, 403 someone else's."""
    if req.user is None:
        raise HubError(401, "You must be authenticated to write to a repo")
    repo = readable(store, req, kind, repo_id)
    if repo.owner != req.user or not req.can_write:
        raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")
    return repo
