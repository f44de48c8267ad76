"""Read endpoints of the test Hub: identity, repo info, trees, history and file downloads."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from tests.support.hub_http import Request, Response, readable
from tests.support.hub_store import Commit, HubError, HubStore, Repo, git_blob_id, hub_date


def whoami(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`GET /api/whoami-v2`: who the bearer token belongs to."""
    if req.user is None:
        raise HubError(401, "Invalid credentials in Authorization header")
    role = "write" if req.can_write else "read"
    return Response.json(
        {
            "type": "user",
            "id": req.user,
            "name": req.user,
            "fullname": req.user,
            "isPro": False,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test-hub", "role": role}},
        }
    )


def validate_yaml(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`POST /api/validate-yaml`: every card is valid here."""
    return Response.json({"errors": [], "warnings": []})


def repo_info(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`GET /api/{kind}/{repo}[/revision/{rev}]`: id, sha, visibility and siblings."""
    repo = readable(store, req, groups["kind"], groups["repo"])
    commit = repo.resolve(groups.get("rev") or "main")
    blobs = req.flag("blobs")
    siblings = [
        {"rfilename": path, **({"size": _size(store, oid), "blobId": oid} if blobs else {})}
        for path, oid in sorted(commit.files.items())
    ]
    return Response.json(
        {
            "_id": git_blob_id(repo.repo_id.encode())[:24],
            "id": repo.repo_id,
            "author": repo.owner,
            "sha": commit.oid,
            "lastModified": hub_date(commit.date),
            "createdAt": hub_date(repo.created_at),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
    )


def _size(store: HubStore, oid: str) -> int:
    return store.blob_path(oid).stat().st_size


def _entry(store: HubStore, repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
    if path in commit.files:
        oid = commit.files[path]
        entry: dict[str, Any] = {"type": "file", "oid": oid, "size": _size(store, oid), "path": path}
    else:
        entry = {"type": "directory", "oid": commit.trees[path], "size": 0, "path": path}
    if expand:
        last = repo.last_change(commit, path)
        entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": hub_date(last.date)}
    return entry


def list_tree(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`GET /api/{kind}/{repo}/tree/{rev}[/{path}]?recursive=&expand=`, unpaginated."""
    repo = readable(store, req, groups["kind"], groups["repo"])
    commit = repo.resolve(groups["rev"])
    base = (groups.get("path") or "").strip("/")
    if base and base not in commit.trees:
        raise HubError(404, f"{base} does not exist on {groups['rev']}", code="EntryNotFound")
    prefix = f"{base}/" if base else ""
    below = [p for p in [*commit.trees, *commit.files] if p and p.startswith(prefix)]
    if not req.flag("recursive"):
        below = [p for p in below if "/" not in p[len(prefix) :]]
    entries = [_entry(store, repo, commit, path, req.flag("expand")) for path in sorted(below)]
    return Response.json(entries)


def paths_info(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`POST /api/{kind}/{repo}/paths-info/{rev}` (form: paths=..., expand=...): missing paths are skipped."""
    repo = readable(store, req, groups["kind"], groups["repo"])
    commit = repo.resolve(groups["rev"])
    form = parse_qs(req.body.decode())
    expand = form.get("expand", ["False"])[-1].lower() in ("1", "true")
    wanted = [p.strip("/") for p in form.get("paths", [])]
    found = [p for p in wanted if p in commit.files or (p and p in commit.trees)]
    return Response.json([_entry(store, repo, commit, path, expand) for path in found])


def list_refs(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`GET /api/{kind}/{repo}/refs`: branches only."""
    repo = readable(store, req, groups["kind"], groups["repo"])
    branches = [
        {"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in sorted(repo.branches.items())
    ]
    return Response.json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})


def list_commits(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`GET /api/{kind}/{repo}/commits/{rev}`: first-parent history, newest first."""
    repo = readable(store, req, groups["kind"], groups["repo"])
    history = repo.history(repo.resolve(groups["rev"]))
    return Response.json(
        [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "authors": [{"user": c.author}],
                "date": hub_date(c.date),
            }
            for c in history
        ]
    )


def resolve_file(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`GET|HEAD /[datasets/]{repo}/resolve/{rev}/{path}`: the file, with the headers `hf_hub_download` checks."""
    repo = readable(store, req, groups.get("kind") or "models", groups["repo"])
    commit = repo.resolve(groups["rev"])
    oid = commit.files.get(groups["path"])
    if oid is None:
        raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
    size = _size(store, oid)
    name = groups["path"].rsplit("/", 1)[-1]
    headers = {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{oid}"',
        "X-Repo-Commit": commit.oid,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{name}"',
    }
    start, end = _byte_range(req.headers.get("range"), size)
    if (start, end) != (0, size):
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    status = 206 if "Content-Range" in headers else 200
    return Response(status, headers=headers, file=store.blob_path(oid), offset=start, length=end - start)


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header or "")
    if match is None or match.group(1) == match.group(2) == "":
        return 0, size
    first, last = match.groups()
    if first == "":
        return max(size - int(last), 0), size
    start, end = int(first), min(int(last) + 1 if last else size, size)
    if start >= size or start >= end:
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end
