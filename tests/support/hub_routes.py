"""The test Hub's route table: which endpoint function answers which method and path.

Only what `huggingface_hub` needs for repos, commits and downloads is here. Patterns match the raw (still
percent-encoded) path, because the client quotes revisions with `safe=""`; groups are unquoted afterwards.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from tests.support.hub_http import Handler, Request, Response
from tests.support.hub_reads import (
    list_commits,
    list_refs,
    list_tree,
    paths_info,
    repo_info,
    resolve_file,
    validate_yaml,
    whoami,
)
from tests.support.hub_store import HubError, HubStore
from tests.support.hub_writes import (
    branch,
    create_commit,
    create_repo,
    delete_repo,
    preupload,
    update_settings,
)

_REPO = r"(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"


ROUTES: list[tuple[frozenset[str], re.Pattern[str], Handler]] = [
    (frozenset({"GET"}), re.compile(r"/api/whoami-v2"), whoami),
    (frozenset({"POST"}), re.compile(r"/api/repos/create"), create_repo),
    (frozenset({"DELETE"}), re.compile(r"/api/repos/delete"), delete_repo),
    (frozenset({"POST"}), re.compile(r"/api/validate-yaml"), validate_yaml),
    (frozenset({"GET"}), re.compile(rf"/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), repo_info),
    (frozenset({"GET"}), re.compile(rf"/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), list_tree),
    (frozenset({"POST"}), re.compile(rf"/api/{_REPO}/paths-info/(?P<rev>[^/]+)"), paths_info),
    (frozenset({"POST"}), re.compile(rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)"), preupload),
    (frozenset({"POST"}), re.compile(rf"/api/{_REPO}/commit/(?P<rev>[^/]+)"), create_commit),
    (frozenset({"GET"}), re.compile(rf"/api/{_REPO}/refs"), list_refs),
    (frozenset({"GET"}), re.compile(rf"/api/{_REPO}/commits/(?P<rev>[^/]+)"), list_commits),
    (frozenset({"POST", "DELETE"}), re.compile(rf"/api/{_REPO}/branch/(?P<branch>[^/]+)"), branch),
    (frozenset({"PUT"}), re.compile(rf"/api/{_REPO}/settings"), update_settings),
    (
        frozenset({"GET", "HEAD"}),
        re.compile(
            r"/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)"
        ),
        resolve_file,
    ),
]


def dispatch(store: HubStore, req: Request) -> Response:
    """Run the first route whose pattern matches the raw path; 404 or 405 otherwise."""
    allowed: set[str] = set()
    for methods, pattern, handler in ROUTES:
        match = pattern.fullmatch(req.path)
        if match is None:
            continue
        if req.method not in methods:
            allowed |= methods
            continue
        groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
        with store.lock:
            return handler(store, req, groups)
    if allowed:
        raise HubError(405, f"Method {req.method} not allowed", headers={"Allow": ", ".join(sorted(allowed))})
    raise HubError(404, f"No test-hub route for {req.method} {req.path}")
