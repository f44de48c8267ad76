"""PEFT adapters served on resident base models: loaded by name next to the base, never reloading it.

The first adapter used on a base model wraps it in a ``PeftModel`` (LoRA layers are injected into the base's
modules in place, so the pipeline holding the base sees them). Further adapters load side by side under their
own names; a job picks one with ``set_adapter``; a job without an adapter runs inside ``disable_adapter()``,
which is exactly the base model. At most ``GPUQ_ADAPTER_CACHE_MAX`` adapters stay loaded per base; the least
recently used is removed with ``delete_adapter``.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuq.common.errors import ModelLoadError
from gpuq.common.jobs.adapterref import ADAPTER_CONFIG, StoredAdapterRef
from gpuq.worker import hub
from gpuq.worker.context import JobContext
from gpuq.worker.sources import local_model_dir, model_source

log = logging.getLogger(__name__)
_ATTR = "_gpuq_adapters"


@dataclass(frozen=True)
class AdapterSource:
    """A resolved adapter: a cache key that changes when its content can, and a local directory."""

    key: str
    path: Path


def resolve(ctx: JobContext, ref: StoredAdapterRef) -> AdapterSource:
    """Find the adapter's files: a fine-tune job's artifacts (same tenant), a Hub repo (pinned), or a local dir."""
    if ref.job is not None:
        config = ctx.store.local_path(ctx.tenant, ref.job, ADAPTER_CONFIG)
        return AdapterSource(f"job:{ctx.tenant}:{ref.job}", config.parent)
    if ref.path is not None:
        path = local_model_dir(ref.path, "params.adapter.path")
        stamp = max((p.stat().st_mtime_ns for p in path.glob("adapter_*")), default=0)
        return AdapterSource(f"path:{path}:{stamp}", path)
    assert ref.repo is not None  # AdapterRef holds exactly one of job, path or repo
    token = hub.pull_token(ref.sealed_token)
    path, pulled = model_source(ref.repo, ref.revision, token, "params.adapter.repo")
    if pulled is None:  # a directory of that name under this worker's roots
        return AdapterSource(f"path:{path}", path)
    ctx.pin("adapter", **pulled.pin())
    return AdapterSource(f"hub:{pulled.repo_id}@{pulled.sha}", pulled.path)


class AdapterSet:
    """The adapters loaded on one resident base model, least recently used first."""

    def __init__(self, base: Any, max_adapters: int) -> None:
        self.base = base
        self.max_adapters = max(1, max_adapters)
        self.peft: Any = None
        self.names: OrderedDict[str, str] = OrderedDict()
        self.pinned: dict[str, int] = {}  # adapter name -> sequences using it

    def activate(self, source: AdapterSource) -> float:
        """Make ``source`` the active adapter, loading it if needed; returns the load time in ms (0 if resident)."""
        name, load_ms = self.ensure(source)
        self.peft.set_adapter(name, inference_mode=True)
        return load_ms

    def ensure(self, source: AdapterSource) -> tuple[str, float]:
        """Load ``source`` beside the others if needed (the active one unchanged); (its name, load ms)."""
        name = self.names.get(source.key)
        load_ms = 0.0
        if name is None:
            started = time.perf_counter()
            name = "a" + hashlib.sha256(source.key.encode()).hexdigest()[:16]
            self._load(source.path, name)
            self.names[source.key] = name
            load_ms = (time.perf_counter() - started) * 1000
        self.names.move_to_end(source.key)
        self._evict(keep=source.key)
        return name, load_ms

    def _load(self, path: Path, name: str) -> None:
        from peft import PeftModel

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(path), adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except Exception as exc:  # noqa: BLE001 - a bad adapter fails the job, not the resident base
            if self.peft is not None and name in self.peft.peft_config:
                self.peft.delete_adapter(name)
            raise ModelLoadError(f"adapter at {path.name!r} does not fit this model: {str(exc)[:300]}") from None

    def _evict(self, keep: str) -> None:
        # Adapters that running sequences use (continuous batching, ``pinned``) stay, even beyond the limit.
        for key in [k for k in self.names if k != keep and self.pinned.get(self.names[k], 0) == 0]:
            if len(self.names) <= self.max_adapters:
                break
            name = self.names.pop(key)
            self.peft.delete_adapter(name)
            log.info("unloaded adapter %s", key)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run on the plain base model (no-op when no adapter was ever loaded)."""
        if self.peft is None:
            yield
            return
        with self.peft.disable_adapter():
            yield


def adapters_of(model: Any, max_adapters: int) -> AdapterSet:
    """The adapter set attached to a resident base model (created on first use)."""
    found = model.__dict__.get(_ATTR)
    if found is None:
        found = AdapterSet(model, max_adapters)
        model.__dict__[_ATTR] = found  # a plain attribute, not a submodule: it goes when the base is evicted
    return found  # type: ignore[no-any-return]


@contextmanager
def applied(ctx: JobContext, model: Any) -> Iterator[None]:
    """Run the body with the job's ``params.adapter`` active on ``model``, or with every adapter disabled."""
    ref = _adapter_of(ctx)
    found = model.__dict__.get(_ATTR)
    if ref is None:
        if found is None:
            yield
        else:
            with found.disabled():
                yield
        return
    source = resolve(ctx, ref)
    aset = found or adapters_of(model, ctx.settings.adapter_cache_max)
    ms = aset.activate(source)
    if ms:
        ctx.log(f"adapter loaded in {ms:.0f} ms on the resident base", adapter_load_ms=round(ms, 3))
    yield


def source_for(ctx: JobContext) -> AdapterSource | None:
    """The job's ``params.adapter`` resolved to a local folder (pinned in the record), or None without one.

    For callers that activate it later on another thread (the inference batcher), see ``activated``.
    """
    ref = _adapter_of(ctx)
    return None if ref is None else resolve(ctx, ref)


def _adapter_of(ctx: JobContext) -> StoredAdapterRef | None:
    """The job's stored ``params.adapter`` (inference and evaluate jobs; None for kinds without one)."""
    adapter = getattr(ctx.params, "adapter", None)
    return adapter if isinstance(adapter, StoredAdapterRef) else None


@contextmanager
def activated(model: Any, source: AdapterSource | None, max_adapters: int) -> Iterator[float]:
    """Run the body with ``source`` active on ``model`` (every adapter disabled for None); yields the adapter's
    load time in ms (0 when it was already loaded). Needs no job context, so one forward pass can serve
    several jobs that share the adapter.

    Passes on a base that has never had an adapter may overlap (``GPUQ_BATCH_EXECUTORS`` > 1); once adapters
    are involved, passes on that base run one at a time, since activating one changes the shared modules.
    """
    guard = _pass_guard(model)
    with guard.shared():
        plain = source is None and model.__dict__.get(_ATTR) is None  # decided while no adapter can appear
        if plain:
            yield 0.0
    if plain:
        return
    with guard.exclusive():
        found = model.__dict__.get(_ATTR)
        if source is None:
            with found.disabled():
                yield 0.0
            return
        aset = found or adapters_of(model, max_adapters)
        yield aset.activate(source)


class _PassGuard:
    """Any number of plain passes at once, or one pass that touches adapters (a readers-writer lock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0  # writers waiting: new readers queue behind them, so an adapter pass is never starved
        self._issued = 0  # writer tickets handed out ...
        self._serving = 0  # ... and the one whose turn it is
        self._abandoned: set[int] = set()  # tickets whose holder stopped waiting

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        # Writers go in arrival order (tickets): the generation engine takes the guard for every decode step
        # of a base with adapters, and without an order it would take it again before a waiting writer (a job
        # loading its adapter) ever woke up.
        with self._cond:
            ticket = self._issued
            self._issued += 1
            self._waiting += 1
            try:
                while self._writer or self._readers or self._serving != ticket:
                    self._cond.wait()
            except BaseException:  # given up while waiting (a time limit): its turn must not block the rest
                self._skip(ticket)
                raise
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._advance()

    def _skip(self, ticket: int) -> None:
        self._abandoned.add(ticket)
        if self._serving == ticket and not self._writer:
            self._advance()

    def _advance(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()


_GUARD_LOCK = threading.Lock()


def _pass_guard(model: Any) -> _PassGuard:
    """The model's guard (a plain attribute, so it goes with the model when it is evicted)."""
    with _GUARD_LOCK:
        guard = model.__dict__.get("_gpuq_pass_guard")
        if guard is None:
            guard = model.__dict__["_gpuq_pass_guard"] = _PassGuard()
        return guard  # type: ignore[no-any-return]


# peft's adapter name for rows of a mixed-adapter batch that run on the base alone.
BASE_ROWS = "__base__"


def pin_for_mixed(model: Any, source: AdapterSource, max_adapters: int) -> tuple[str, float]:
    """Load ``source`` on ``model`` for mixed-adapter batches (``mixed``) and keep it loaded until ``unpin``;
    returns (its name, load ms: 0 when it was resident)."""
    with _pass_guard(model).exclusive():  # loading injects layers into modules a pass may be running
        aset = adapters_of(model, max_adapters)
        name, ms = aset.ensure(source)
        aset.pinned[name] = aset.pinned.get(name, 0) + 1
    return name, ms


def unpin(model: Any, name: str) -> None:
    """A sequence no longer uses adapter ``name`` (it may be evicted again)."""
    with _pass_guard(model).exclusive():
        aset = model.__dict__.get(_ATTR)
        if aset is not None and aset.pinned.get(name):
            aset.pinned[name] -= 1


@contextmanager
def mixed(model: Any) -> Iterator[Any]:
    """Run a pass whose rows may each name an adapter: yields the ``PeftModel`` to call with
    ``adapter_names`` (one per row, ``BASE_ROWS`` for none), or None while the base has never had an adapter
    (then call the base itself). peft runs such a batch per adapter inside each LoRA layer, leaving the active
    adapter alone, so a pass with adapters only has to exclude passes that switch or disable them."""
    guard = _pass_guard(model)
    with guard.shared():
        found = model.__dict__.get(_ATTR)
        plain = found is None or found.peft is None
        if plain:
            yield None
    if plain:
        return
    with guard.exclusive():
        yield found.peft
