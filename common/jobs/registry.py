"""The job-kind registry: one spec per kind; the API validates and Celery routes from it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

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


def load_builtin_kinds() -> None:
    """Import the built-in kind modules so they register themselves."""
    from gpuq.common.jobs import BUILTIN_KINDS  # noqa: F401  (import has the side effect)


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
