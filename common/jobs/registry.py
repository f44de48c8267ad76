"""The job-kind registry: one spec per kind; the API validates and Celery routes from it.

Params cross the Redis boundary in two forms. ``params_model`` is what a client submits (strict: unknown
keys are refused, clear tokens allowed); the kind's ``check`` turns it into the stored form (tokens sealed,
adapters and data sources resolved), which the record keeps. ``stored_model`` describes that stored form:
the worker validates a record's params with it once, when it builds the job's context
(``JobSpec.load_params``), and handlers read typed attributes from then on. Stored models ignore unknown keys, so a record written by an
older release still loads.

Kinds are discovered: every module of this package that calls ``register`` at import is a kind, and
``load_builtin_kinds`` imports them all; adding a kind is adding its module (and its handler in
``worker/handlers/<kind>.py``). Knobs a kind needs live on its spec (time limit, attempts, routing) or in a
settings section of its own (``ImageSettings``, ``DataJobSettings`` in ``gpuq.common.settings``).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError

from gpuq.common.errors import InvalidInput
from gpuq.common.settings import Settings


@dataclass(frozen=True)
class Validated:
    """A request after its kind's checks: normalised model reference, inputs and params."""

    model: str
    inputs: Any
    params: dict[str, Any]


@dataclass(frozen=True)
class Submitter:
    """Who submits, and under which settings: what kind checks may depend on besides the body."""

    tenant: str
    settings: Settings


Check = Callable[[str, Any, BaseModel, Submitter], Validated]


@dataclass(frozen=True)
class JobSpec:
    """What gpuq needs to know about one job kind."""

    kind: str
    queue: str
    params_model: type[BaseModel]
    check: Check
    # The params as the record holds them after ``check`` (sealed tokens, resolved references): what the
    # worker validates once and hands to the handler.
    stored_model: type[BaseModel]
    time_limit_s: int | None = None
    max_attempts: int = 3
    description: str = ""
    # Jobs of this kind load ``model`` on the worker: route them to a live worker that already holds it.
    affinity: bool = False
    # Bulk-submitted jobs of this kind travel in group messages and run together (worker/groups.py).
    groups: bool = False

    def effective_time_limit(self, settings: Settings) -> int:
        """Hard time limit in seconds for jobs of this kind."""
        return self.time_limit_s or settings.job_time_limit_s

    def validate(self, model: str, inputs: Any, params: dict[str, Any], who: Submitter) -> Validated:
        """Validate params with the kind's model, then run its input checks; 422 names the field."""
        try:
            parsed = self.params_model.model_validate(params)
        except ValidationError as exc:
            raise pydantic_to_invalid(exc, prefix="params", raw=params) from None
        return self.check(model, inputs, parsed, who)

    def load_params(self, stored: dict[str, Any]) -> BaseModel:
        """A record's params as the kind's typed stored model (the worker's one validation of them)."""
        parsed = self.stored_model.model_validate(stored)
        return parsed.root if isinstance(parsed, RootModel) else parsed  # a union of forms: the member


_REGISTRY: dict[str, JobSpec] = {}


def register(spec: JobSpec) -> JobSpec:
    """Add a kind to the registry (module import time)."""
    _REGISTRY[spec.kind] = spec
    return spec


def get_spec(kind: str) -> JobSpec:
    """The spec for ``kind``; 422 naming ``kind`` when unknown."""
    load_builtin_kinds()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {sorted(_REGISTRY)}", field="kind") from None


def all_specs() -> list[JobSpec]:
    """Every registered kind."""
    load_builtin_kinds()
    return list(_REGISTRY.values())


@lru_cache(maxsize=1)
def load_builtin_kinds() -> None:
    """Import every module of ``gpuq.common.jobs`` once; kind modules register themselves on import."""
    package = importlib.import_module("gpuq.common.jobs")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


M = TypeVar("M", bound=BaseModel)


def stored_variant(model: type[M], name: str, *mixins: type[BaseModel], **fields: tuple[Any, Any]) -> type[M]:
    """``model`` as the worker reads it back from a record: unknown keys ignored (records of older releases),
    ``mixins`` added (fields several kinds store alike) and ``fields`` (name: (type, default)) in their stored
    form, e.g. a resolved adapter in place of the submitted reference."""
    namespace: dict[str, Any] = {
        "__module__": model.__module__, "__qualname__": name, "__doc__": f"Stored form of {model.__name__}.",
        "model_config": ConfigDict(extra="ignore"),
        "__annotations__": {key: kind for key, (kind, _) in fields.items()},
        **{key: default for key, (_, default) in fields.items()},
    }
    return type(name, (model, *mixins), namespace)


def pydantic_to_invalid(exc: ValidationError, prefix: str, raw: object = None) -> InvalidInput:
    """Turn a pydantic error into InvalidInput naming the first bad field.

    Discriminated unions put the tag value into ``loc``; it is dropped so the field reads
    ``params.max_new_tokens`` (or ``params.inference.max_new_tokens`` when nested), and a bad or missing tag
    is reported against the discriminator itself.
    """
    first = exc.errors()[0]
    parts: list[str] = []
    node = raw
    for part in map(str, first["loc"]):
        if isinstance(node, dict) and part not in node and part in map(str, node.values()):
            continue  # the tag of a discriminated union, not a field
        parts.append(part)
        node = _child(node, part)
    if first["type"].startswith("union_tag"):
        parts.append(str(first.get("ctx", {}).get("discriminator", "")).strip("'"))
    loc = ".".join(p for p in (prefix, *parts) if p)
    return InvalidInput(f"{loc}: {first['msg']}", field=loc)


def _child(node: object, part: str) -> object:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None
