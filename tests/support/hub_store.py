"""Git-like repository store behind the test Hub server.

Blobs live on disk (content-addressed by their git blob id); commits, trees and branches are computed the way git
computes them, so every commit id is a real 40-hex sha1 and a revision sha resolves to the files of that commit.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")
# The real Hub seeds every new repo with a .gitattributes; ours keeps the same shape, minus the long LFS list.
INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)


class HubError(Exception):
    """An error the server answers the way the real Hub does: status, `X-Error-Code`, message."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def git_object_id(kind: str, payload: bytes) -> str:
    """The sha1 git gives an object of `kind` ("blob", "tree", "commit") with this payload."""
    return hashlib.sha1(f"{kind} {len(payload)}\0".encode() + payload).hexdigest()


def git_blob_id(content: bytes) -> str:
    """The git blob id of a file's content (what `git hash-object` prints)."""
    return git_object_id("blob", content)


def _nest(files: Mapping[str, str]) -> dict[str, object]:
    root: dict[str, object] = {}
    for path, oid in files.items():
        node = root
        *dirs, name = path.split("/")
        for part in dirs:
            child = node.setdefault(part, {})
            assert isinstance(child, dict), f"{path} is below a file"
            node = child
        node[name] = oid
    return root


def _tree_id(node: dict[str, object], prefix: str, out: dict[str, str]) -> str:
    entries: list[tuple[str, bytes]] = []
    for name, child in node.items():
        if isinstance(child, dict):
            oid = _tree_id(child, f"{prefix}{name}/", out)
            # git sorts a tree entry as if its name ended with "/".
            entries.append((name + "/", b"40000 " + name.encode() + b"\0" + bytes.fromhex(oid)))
        else:
            assert isinstance(child, str)
            entries.append((name, b"100644 " + name.encode() + b"\0" + bytes.fromhex(child)))
    oid = git_object_id("tree", b"".join(raw for _, raw in sorted(entries)))
    out[prefix.rstrip("/")] = oid
    return oid


def tree_ids(files: Mapping[str, str]) -> dict[str, str]:
    """Git tree id of every directory of a `path -> blob id` snapshot; the root is keyed ""."""
    out: dict[str, str] = {}
    _tree_id(_nest(files), "", out)
    return out


def hub_date(moment: datetime) -> str:
    """Format a datetime the way the Hub API does (`2024-01-31T12:00:00.000Z`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Commit:
    """One commit: its full snapshot (path -> blob id), tree ids, parent and message."""

    oid: str
    parent: str | None
    files: Mapping[str, str]
    trees: Mapping[str, str]
    title: str
    message: str
    author: str
    date: datetime


def make_commit(
    files: Mapping[str, str], parent: str | None, title: str, description: str, author: str
) -> Commit:
    """Build a commit object whose oid is computed exactly like git's."""
    trees = tree_ids(files)
    date = datetime.now(UTC)
    identity = f"{author} <{author}@users.noreply.huggingface.co> {int(date.timestamp())} +0000"
    message = f"{title}\n\n{description}\n" if description else f"{title}\n"
    header = f"tree {trees['']}\n" + (f"parent {parent}\n" if parent else "")
    payload = f"{header}author {identity}\ncommitter {identity}\n\n{message}".encode()
    oid = git_object_id("commit", payload)
    return Commit(oid, parent, dict(files), trees, title, message.rstrip("\n"), author, date)


@dataclass
class Repo:
    """A repository: owner, visibility, branches and every commit ever made to it."""

    repo_type: str
    repo_id: str
    owner: str
    private: bool
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def find(self, revision: str) -> Commit | None:
        """The commit a branch name, full sha or unique short sha points at, or None."""
        revision = revision.removeprefix("refs/heads/")
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if COMMIT_SHA.fullmatch(revision):
            return self.commits.get(revision)
        if SHORT_SHA.fullmatch(revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            return self.commits[matches[0]] if len(matches) == 1 else None
        return None

    def resolve(self, revision: str) -> Commit:
        """Like `find`, but a miss is the Hub's 404 `RevisionNotFound`."""
        commit = self.find(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    def history(self, commit: Commit) -> Iterator[Commit]:
        """The commit and its first-parent ancestors, newest first."""
        current: Commit | None = commit
        while current is not None:
            yield current
            current = self.commits.get(current.parent) if current.parent else None

    def last_change(self, commit: Commit, path: str) -> Commit:
        """The newest commit (from `commit` back) that changed the file or folder at `path`."""

        def oid_at(c: Commit) -> str | None:
            return c.files.get(path) or c.trees.get(path)

        current = oid_at(commit)
        last = commit
        for older in self.history(commit):
            if oid_at(older) != current:
                break
            last = older
        return last


def _checked_path(path: str) -> str:
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise HubError(400, f"Invalid path in commit: {path!r}")
    return path


def _check_layout(files: Mapping[str, str]) -> None:
    clash = sorted(set(files) & _all_parents(files))
    if clash:
        raise HubError(400, f"A file and a folder cannot share a path: {clash[0]}")


def _all_parents(files: Mapping[str, str]) -> set[str]:
    parents: set[str] = set()
    for path in files:
        parts = path.split("/")[:-1]
        parents.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return parents


class HubStore:
    """Thread-safe set of repositories, with blob content kept under `root`."""

    def __init__(self, root: Path) -> None:
        self.lock = threading.RLock()
        self._blobs = root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._repos: dict[tuple[str, str], Repo] = {}

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        """The repo, or None if it does not exist."""
        return self._repos.get((repo_type, repo_id))

    def create_repo(self, repo_type: str, repo_id: str, owner: str, private: bool) -> Repo:
        """Create a repo whose `main` holds an initial commit with `.gitattributes`, as on the Hub."""
        with self.lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = Repo(repo_type, repo_id, owner, private)
            files = {".gitattributes": self.write_blob(INITIAL_GITATTRIBUTES)}
            self._add_commit(repo, "main", make_commit(files, None, "initial commit", "", owner))
            self._repos[(repo_type, repo_id)] = repo
            return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        """Forget a repo (its blobs stay, as they may be shared)."""
        with self.lock:
            self._repos.pop((repo_type, repo_id), None)

    def write_blob(self, content: bytes) -> str:
        """Store content once under its git blob id and return that id."""
        oid = git_blob_id(content)
        path = self._blobs / oid
        if not path.exists():
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        return oid

    def blob_path(self, oid: str) -> Path:
        """Where the content of a blob lives on disk."""
        return self._blobs / oid

    def read_blob(self, oid: str) -> bytes:
        """The content of a blob."""
        return self.blob_path(oid).read_bytes()

    def commit(
        self,
        repo: Repo,
        branch: str,
        *,
        author: str,
        title: str,
        description: str = "",
        add: Mapping[str, bytes] | None = None,
        delete_files: tuple[str, ...] = (),
        delete_folders: tuple[str, ...] = (),
        parent_commit: str | None = None,
    ) -> Commit:
        """Apply deletions then additions on top of `branch` and move the branch to the new commit."""
        with self.lock:
            head = repo.resolve(branch)
            if parent_commit is not None and not head.oid.startswith(parent_commit):
                raise HubError(412, f"Parent commit {parent_commit} is not the head of {branch} ({head.oid})")
            files = dict(head.files)
            for path in delete_files:
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
            for folder in delete_folders:
                prefix = folder.rstrip("/") + "/"
                doomed = [path for path in files if path.startswith(prefix)]
                if not doomed:
                    raise HubError(
                        404, f"A folder with this name doesn't exist: {folder}", code="EntryNotFound"
                    )
                for path in doomed:
                    del files[path]
            for path, content in (add or {}).items():
                files[_checked_path(path)] = self.write_blob(content)
            _check_layout(files)
            return self._add_commit(repo, branch, make_commit(files, head.oid, title, description, author))

    def create_branch(self, repo: Repo, branch: str, starting_point: str) -> None:
        """Point a new branch at the commit `starting_point` resolves to (409 if it exists)."""
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = repo.resolve(starting_point).oid

    def snapshot(self, repo: Repo, revision: str) -> dict[str, bytes]:
        """Every file of the repo at `revision`, with its content."""
        commit = repo.resolve(revision)
        return {path: self.read_blob(oid) for path, oid in sorted(commit.files.items())}

    def _add_commit(self, repo: Repo, branch: str, commit: Commit) -> Commit:
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit
