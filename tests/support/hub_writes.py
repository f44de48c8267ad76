"""Write endpoints of the test Hub: repos, settings, branches, preupload and commits.

Preupload answers "regular" for every file, so the client sends content base64-encoded inside the NDJSON commit
and never asks for LFS or Xet storage.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from tests.support.hub_http import Request, Response, repo_url, writable
from tests.support.hub_store import HubError, HubStore


def create_repo(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`POST /api/repos/create`: only into the caller's own namespace; 409 if it exists."""
    if req.user is None:
        raise HubError(401, "You must be authenticated to create a repo")
    body = req.json()
    namespace = body.get("organization") or req.user
    if namespace != req.user or not req.can_write:
        raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
    private = body.get("visibility", "private" if body.get("private") else "public") != "public"
    repo_type, repo_id = body.get("type") or "model", f"{namespace}/{body['name']}"
    existing = store.get(repo_type, repo_id)
    if existing is not None:
        url = repo_url(req.endpoint, existing)
        return Response.json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
    repo = store.create_repo(repo_type, repo_id, req.user, private)
    return Response.json({"url": repo_url(req.endpoint, repo), "name": repo_id, "id": repo.branches["main"]})


def delete_repo(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`DELETE /api/repos/delete`."""
    body = req.json()
    repo_type = body.get("type") or "model"
    repo_id = f"{body.get('organization') or req.user}/{body['name']}"
    writable(store, req, repo_type, repo_id)
    store.delete_repo(repo_type, repo_id)
    return Response.json({})


def update_settings(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`PUT /api/{kind}/{repo}/settings`: visibility only."""
    repo = writable(store, req, groups["kind"], groups["repo"])
    body = req.json()
    if "visibility" in body or "private" in body:
        repo.private = body.get("visibility", "private" if body.get("private") else "public") != "public"
    return Response.json({})


def branch(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`POST|DELETE /api/{kind}/{repo}/branch/{branch}`."""
    repo = writable(store, req, groups["kind"], groups["repo"])
    name = groups["branch"]
    if req.method == "DELETE":
        if repo.branches.pop(name, None) is None:
            raise HubError(404, f"Invalid rev id: {name}", code="RevisionNotFound")
        return Response.json({})
    store.create_branch(repo, name, req.json().get("startingPoint") or "main")
    return Response.json({})


def preupload(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`POST /api/{kind}/{repo}/preupload/{rev}`: every file is "regular", so no LFS or Xet upload happens."""
    repo = writable(store, req, groups["kind"], groups["repo"])
    commit = repo.find(groups["rev"])
    current = commit.files if commit is not None else {}
    files = [
        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": current.get(f["path"])}
        for f in req.json().get("files", [])
    ]
    return Response.json({"files": files, "commitOid": commit.oid if commit else None})


def _commit_lines(body: bytes) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError as exc:
        raise HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc


def _decode(value: Mapping[str, Any]) -> bytes:
    if value.get("encoding", "base64") != "base64":
        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
    try:
        return base64.b64decode(value["content"], validate=True)
    except (binascii.Error, KeyError) as exc:
        raise HubError(400, f"Invalid file content for {value.get('path')}") from exc


def create_commit(store: HubStore, req: Request, groups: dict[str, str]) -> Response:
    """`POST /api/{kind}/{repo}/commit/{rev}`: NDJSON header + file/deletedFile/deletedFolder lines."""
    repo = writable(store, req, groups["kind"], groups["repo"])
    branch = groups["rev"].removeprefix("refs/heads/")
    if req.flag("create_pr"):
        raise HubError(400, "Pull requests are not supported by the test hub")
    if branch not in repo.branches:
        if repo.find(branch) is not None:
            raise HubError(400, f"Invalid rev id: {branch} is not a branch")
        raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
    header: dict[str, Any] = {}
    add: dict[str, bytes] = {}
    deleted: dict[str, list[str]] = {"deletedFile": [], "deletedFolder": []}
    for line in _commit_lines(req.body):
        key, value = line.get("key"), line.get("value", {})
        if key == "header":
            header = value
        elif key == "file":
            add[value["path"]] = _decode(value)
        elif key in deleted:
            deleted[key].append(value["path"])
        else:
            raise HubError(
                400, f"Unsupported commit operation {key!r} (the test hub only accepts regular files)"
            )
    commit = store.commit(
        repo,
        branch,
        author=req.user or "",
        title=header.get("summary") or "Update",
        add=add,
        description=header.get("description", ""),
        delete_files=tuple(deleted["deletedFile"]),
        delete_folders=tuple(deleted["deletedFolder"]),
        parent_commit=header.get("parentCommit"),
    )
    url = f"{repo_url(req.endpoint, repo)}/commit/{commit.oid}"
    return Response.json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})
