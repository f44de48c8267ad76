"""Artifact storage: per tenant, per job, behind a small protocol an S3 store can implement."""
from __future__ import annotations

import hashlib
import mimetypes
import re
import shutil
from pathlib import Path
from typing import Protocol

from gpuq.common.errors import InvalidInput, NotFound
from gpuq.common.schemas import ArtifactInfo

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_name(name: str) -> str:
    """Validate an artifact name: slash-separated segments of safe characters, no traversal."""
    parts = name.split("/")
    if not name or len(name) > 512 or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise InvalidInput(f"invalid artifact name {name!r}", field="name")
    return name


def _scope(tenant: str, job_id: str) -> tuple[str, str]:
    return safe_name(tenant), safe_name(job_id)


class ArtifactStore(Protocol):
    """What the worker writes and the API serves; local disk today, S3 later."""

    def put_bytes(self, tenant: str, job_id: str, name: str, data: bytes) -> ArtifactInfo: ...

    def put_file(self, tenant: str, job_id: str, name: str, src: Path) -> ArtifactInfo: ...

    def list(self, tenant: str, job_id: str) -> list[ArtifactInfo]: ...

    def local_path(self, tenant: str, job_id: str, name: str) -> Path: ...

    def delete(self, tenant: str, job_id: str, name: str) -> None: ...


class LocalArtifactStore:
    """Artifacts as files under ``root/tenant/job_id/name``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, tenant: str, job_id: str, name: str) -> Path:
        t, j = _scope(tenant, job_id)
        path = (self.root / t / j / safe_name(name)).resolve()
        if not path.is_relative_to(self.root / t / j):
            raise InvalidInput(f"invalid artifact name {name!r}", field="name")
        return path

    def _info(self, path: Path, name: str) -> ArtifactInfo:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return ArtifactInfo(name=name, size=path.stat().st_size, sha256=digest.hexdigest(), content_type=ctype)

    def put_bytes(self, tenant: str, job_id: str, name: str, data: bytes) -> ArtifactInfo:
        """Write an artifact atomically (temp file + rename) and describe it."""
        path = self._path(tenant, job_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return self._info(path, name)

    def put_file(self, tenant: str, job_id: str, name: str, src: Path) -> ArtifactInfo:
        """Copy a file into the store."""
        path = self._path(tenant, job_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(path)
        return self._info(path, name)

    def list(self, tenant: str, job_id: str) -> list[ArtifactInfo]:
        """Every artifact of a job, by name."""
        base = self.root.joinpath(*_scope(tenant, job_id))
        if not base.is_dir():
            return []
        files = sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [self._info(p, p.relative_to(base).as_posix()) for p in files]

    def local_path(self, tenant: str, job_id: str, name: str) -> Path:
        """Path of an existing artifact; NotFound otherwise."""
        path = self._path(tenant, job_id, name)
        if not path.is_file():
            raise NotFound(f"artifact {name!r} not found", field="name")
        return path


    def delete(self, tenant: str, job_id: str, name: str) -> None:
        """Remove an artifact, or every artifact under the folder ``name`` (missing is fine)."""
        path = self._path(tenant, job_id, name)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def get_store(root: Path) -> ArtifactStore:
    """The configured artifact store."""
    return LocalArtifactStore(root)
