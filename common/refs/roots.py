"""The directories a reference may point into, and the stores it may never point into.

Local references are allowed under the model roots (``GPUQ_MODEL_ROOTS``) and, for data files, the dataset
roots (``GPUQ_DATASET_ROOTS``). The artifact store and the files store hold every tenant's outputs and
uploads; a root may contain them (one data volume is a natural layout), so they are excluded explicitly:
a path that resolves inside either is refused whatever root it came through. Tenants reach their own
outputs and uploads by id (``{"job": ...}``, ``file_id``), which is checked against the tenant.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gpuq.common.errors import InvalidInput
from gpuq.common.settings import Settings


@dataclass(frozen=True)
class Roots:
    """Resolved roots (symlinks followed) and the stores excluded from them."""

    models: tuple[Path, ...]
    datasets: tuple[Path, ...]
    stores: tuple[Path, ...]

    def in_store(self, path: Path) -> bool:
        """True when the resolved ``path`` lies in the artifact or the files store."""
        return within(path, self.stores)


def within(path: Path, bases: Sequence[Path]) -> bool:
    """True when ``path`` is one of ``bases`` or lies below one of them (both resolved)."""
    return any(path == base or path.is_relative_to(base) for base in bases)


def roots_of(settings: Settings) -> Roots:
    """The settings' roots, resolved once per distinct configuration (resolving costs a syscall per part)."""
    # Asked several times per submit: the last answer is kept for as long as the settings object and the
    # values it was built from are the very same objects (building the lookup key costs more than the lookup).
    used = (settings.model_roots, settings.dataset_roots, settings.artifact_dir, settings.files_dir)
    last = _last.get("roots")
    if last is not None and last[0] is settings and all(a is b for a, b in zip(last[1], used)):
        return last[2]
    roots = _resolved(tuple(settings.model_roots), tuple(settings.dataset_roots),
                      (settings.artifact_dir, settings.files_root))
    _last["roots"] = (settings, used, roots)
    return roots


_last: dict[str, tuple[Settings, tuple[object, ...], Roots]] = {}


def roots_for(models: Sequence[Path], settings: Settings) -> Roots:
    """Like ``roots_of``, with other model roots (callers that hold a list of roots of their own)."""
    return _resolved(tuple(models), tuple(settings.dataset_roots), (settings.artifact_dir, settings.files_root))


@lru_cache(maxsize=16)
def _resolved(models: tuple[Path, ...], datasets: tuple[Path, ...], stores: tuple[Path, ...]) -> Roots:
    def resolve(paths: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(p.expanduser().resolve() for p in paths)
    return Roots(resolve(models), resolve(datasets), resolve(stores))


def contained(path: Path, bases: Sequence[Path], roots: Roots, field: str, where: str) -> Path:
    """``path`` resolved; 422 naming ``field`` when it lies outside ``bases`` or inside a store."""
    resolved = _resolve(path, field)
    if roots.in_store(resolved):
        raise InvalidInput(f"{field}: points into the artifact or files store; refer to a job's outputs with "
                           "its id and to an upload with its file_id", field=field)
    if not within(resolved, bases):
        raise InvalidInput(f"{field}: local path is outside {where}", field=field)
    return resolved


def find(ref: str, bases: Sequence[Path], roots: Roots, field: str, where: str) -> Path | None:
    """The resolved path ``ref`` names under ``bases``, or None when it names nothing there.

    An absolute path (``~`` expanded) must lie under ``bases``. A relative one, ``./x`` included, is looked up
    as ``base/ref`` in each base in order, never against the process's working directory: the first that
    exists wins; it may not contain a ``..`` segment. Either way a path that resolves outside ``bases`` (a symlink out, ``..``) or into a store is
    a 422 naming ``field``, not a miss.
    """
    path = _expand(ref, field)
    if path.is_absolute():
        return contained(path, bases, roots, field, where)
    rel = ref
    while rel.startswith("./"):
        rel = rel[2:]
    if rel.strip("/") in ("", "."):
        raise InvalidInput(f"{field}: empty reference", field=field)
    if ".." in rel.split("/"):
        raise InvalidInput(f"{field}: a relative reference may not climb out of a root with '..'", field=field)
    for base in bases:
        candidate = base / rel
        try:
            exists = candidate.exists()
        except OSError:  # a name too long, a path component that is a file: nothing there
            exists = False
        if exists:
            return contained(candidate, bases, roots, field, where)
    return None


def _resolve(path: Path, field: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise InvalidInput(f"{field}: the path cannot be resolved ({type(exc).__name__})", field=field) from None


def _expand(ref: str, field: str) -> Path:
    if not ref.startswith("~"):
        return Path(ref)
    try:
        return Path(ref).expanduser()
    except RuntimeError:  # ~user of an unknown user
        raise InvalidInput(f"{field}: cannot expand {ref.split('/', 1)[0]!r}", field=field) from None


def is_dir(path: Path) -> bool:
    """``path.is_dir()``, False on any OS error (a name too long raises rather than answer False)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def is_file(path: Path) -> bool:
    """``path.is_file()``, False on any OS error."""
    try:
        return path.is_file()
    except OSError:
        return False
