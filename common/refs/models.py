"""Model references: a directory under the model roots, or a Hub repo id; and the models the roots hold.

``resolve_model`` is the one place a model (or adapter) reference is decided, at submit in the API and
again on the worker before anything is loaded:

1. control characters are a 422 naming the field;
2. an absolute path must resolve (symlinks followed) inside ``GPUQ_MODEL_ROOTS`` and outside the stores;
3. any other reference (``gpt2``, ``org/name``, ``./x``, ``sub/dir/x``) is looked up as ``<root>/<ref>`` in
   each model root in order; the first that exists wins, and it too must resolve inside the roots;
4. failing that, a Hub-shaped id (``name`` or ``owner/name``) goes to the Hub and its cache; anything else
   is a 422 that suggests the catalog name whose last part matches (``did you mean 'gpt2'?``).

No step looks at a process's working directory. A local reference is stored as its resolved absolute
directory, a Hub one as the id; the worker hands the libraries that directory, or the Hub snapshot's.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuq.common.errors import InvalidInput
from gpuq.common.refs.names import check_chars, is_hub_id
from gpuq.common.refs.roots import Roots, find, is_dir, roots_of, within
from gpuq.common.settings import Settings

ROOTS_SETTING = "GPUQ_MODEL_ROOTS"
# What makes a directory a model: transformers' config, a diffusers pipeline's index, a PEFT adapter's config.
MARKERS: tuple[tuple[str, str], ...] = (("model_index.json", "pipeline"), ("adapter_config.json", "adapter"),
                                        ("config.json", "model"))
_TTL_S = 2.0  # a bulk submit names the same model hundreds of times; resolving costs a syscall per part
_MAX_DEPTH = 3  # <root>/org/name is depth 2; one more level for a grouping folder
_MAX_ENTRIES = 20_000  # directories a catalog walk looks at, at most


@dataclass(frozen=True)
class ModelRef:
    """A decided reference: ``local`` with the resolved absolute directory, or ``hub`` with the repo id."""

    source: Literal["local", "hub"]
    value: str

    @property
    def is_local(self) -> bool:
        return self.source == "local"


@dataclass(frozen=True)
class LocalModel:
    """A model directory under the roots: the name it resolves by (root-relative), where it is, what it is."""

    name: str
    path: Path
    root: Path
    kind: str  # "model", "pipeline" or "adapter"


# (ref, id of the Roots) -> (when, the Roots, the answer): Roots objects are cached by roots_of, and keying
# by identity spares hashing their paths on every lookup; the Roots kept in the value keeps the id unique.
_resolved: dict[tuple[str, int], tuple[float, Roots, ModelRef]] = {}


def resolve_model(ref: str, settings: Settings, field: str = "model", roots: Roots | None = None) -> ModelRef:
    """Decide what ``ref`` names (rules in the module docstring); 422 naming ``field`` when it names nothing."""
    check_chars(ref, field)
    roots = roots or roots_of(settings)
    now = time.monotonic()
    hit = _resolved.get((ref, id(roots)))
    if hit is not None and hit[1] is roots and now - hit[0] < _TTL_S:
        return hit[2]
    local = find_model_dir(ref, roots, field)
    if local is not None:
        out = ModelRef("local", str(local))
    elif is_hub_id(ref):
        out = ModelRef("hub", ref)
    else:
        raise InvalidInput(f"{field}: {ref!r} is not a model directory under {ROOTS_SETTING} nor a Hub repo id "
                           f"(owner/name){suggestion(ref, settings)}", field=field)
    if len(_resolved) > 1024:
        _resolved.clear()
    _resolved[(ref, id(roots))] = (now, roots, out)
    return out


def resolve_local_dir(ref: str, settings: Settings, field: str) -> Path:
    """A directory under the model roots (adapter folders): ``resolve_model`` without the Hub."""
    check_chars(ref, field)
    found = find_model_dir(ref, roots_of(settings), field)
    if found is None:
        raise InvalidInput(f"{field}: no directory {ref!r} under {ROOTS_SETTING}{suggestion(ref, settings)}",
                           field=field)
    return found


def find_model_dir(ref: str, roots: Roots, field: str) -> Path | None:
    """The checked directory ``ref`` names under the model roots; None when it names nothing there."""
    found = find(ref, roots.models, roots, field, ROOTS_SETTING)
    if found is None:
        return None
    if not is_dir(found):
        raise InvalidInput(f"{field}: local model directory does not exist", field=field)
    return found


def model_kind(path: Path) -> str | None:
    """What the directory holds by its marker file ("model", "pipeline", "adapter"), or None."""
    return next((kind for marker, kind in MARKERS if os.path.isfile(path / marker)), None)


_catalog: dict[Roots, tuple[float, list[LocalModel]]] = {}


def local_models(settings: Settings) -> list[LocalModel]:
    """Every model directory under the model roots, by the root-relative name that resolves to it.

    Roots in order, names sorted within each; a directory reachable twice (a symlink) is listed once, under
    its first name, and a name an earlier root already holds is left out (it resolves to that one). A model's own subfolders (a pipeline's ``unet/``) are not models of their own. Hidden
    folders and the stores are skipped. A root that is itself a model is listed by its absolute path (the
    name that resolves to it). Remembered for a couple of seconds.
    """
    roots = roots_of(settings)
    now = time.monotonic()
    hit = _catalog.get(roots)
    if hit is not None and now - hit[0] < _TTL_S:
        return hit[1]
    found: list[LocalModel] = []
    seen: set[Path] = set()
    budget = [_MAX_ENTRIES]
    for root in roots.models:
        _walk(root, root, 0, roots, found, seen, budget)
    _catalog.clear()
    _catalog[roots] = (now, found)
    return found


def _walk(root: Path, folder: Path, depth: int, roots: Roots, found: list[LocalModel], seen: set[Path],
          budget: list[int]) -> None:
    budget[0] -= 1
    try:
        real = folder.resolve()
    except (OSError, RuntimeError):
        return
    if budget[0] < 0 or real in seen or roots.in_store(real) or not within(real, roots.models):
        return
    seen.add(real)
    kind = model_kind(real)
    if kind is not None:
        name = folder.relative_to(root).as_posix() if folder != root else str(root)
        if all(m.name != name for m in found):  # else an earlier root's model of that name shadows it
            found.append(LocalModel(name, real, root, kind))
        return
    if depth >= _MAX_DEPTH:
        return
    try:
        children = sorted(e.name for e in os.scandir(real) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return
    for child in children:
        _walk(root, folder / child, depth + 1, roots, found, seen, budget)


def catalog_name(path: str | Path, settings: Settings) -> str | None:
    """The catalog name of a resolved local model directory (as a job record stores it), or None."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    return next((m.name for m in local_models(settings) if m.path == real), None)


def suggestion(ref: str, settings: Settings) -> str:
    """``; did you mean 'gpt2'?`` when a catalog name ends like ``ref`` does, else empty."""
    last = ref.rstrip("/").rsplit("/", 1)[-1]
    if not last:
        return ""
    names = [m.name for m in local_models(settings) if m.name.rsplit("/", 1)[-1] == last]
    return f"; did you mean {names[0]!r}?" if names else ""
