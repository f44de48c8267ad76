"""The KV cache the engine runs a causal LM over: one dense row of positions per running sequence.

Each layer keeps keys and values as ``[rows, kv_heads, positions, head_dim]`` tensors; the running sequences
hold rows ``0..B-1`` (a sequence that leaves is replaced by the last one, so they stay a prefix), and a
decode step attends over ``rows[:B, :, :longest]`` with a mask that hides each row's unused positions. The
model sees a transformers ``Cache`` whose layers write the step's new keys and values into those rows and
hand back views: no copy of the cache per step.

Why not pages: without a paged-attention kernel (CPU, or a GPU without flash attention), a paged cache has to
be gathered into a dense tensor every step, a copy of the whole cache per layer (measured here at several
times the attention itself). Dense rows waste the gap between the longest running sequence and each row's
own length, which the admission accounting counts as used (``engine.KvBudget``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class Plan:
    """What the next forward pass writes: one row's prompt chunk (prefill) or one token per row (decode)."""

    decode: bool = True
    rows: int = 0  # decode: the running rows 0..rows-1
    positions: torch.Tensor | None = None  # decode: each row's write position
    span: int = 0  # decode: positions attended (the longest row + 1)
    row: int = 0  # prefill: the row written
    start: int = 0  # prefill: its first position


@dataclass
class Shape:
    """A model's per-layer key/value shape, found by one probing forward pass."""

    layers: int
    heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device

    def bytes_per_token(self) -> int:
        """Bytes of keys and values one position takes across every layer."""
        return 2 * self.layers * self.heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()


class _SlotLayer(CacheLayerMixin):  # type: ignore[misc]
    """One layer's rows; ``update`` follows the shared plan."""

    is_compileable = False
    is_sliding = False

    def __init__(self, plan: Plan, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.plan, self.keys, self.values = plan, keys, values
        self.is_initialized = True
        self.device = keys.device

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        plan, keys, values = self.plan, self.keys, self.values
        if plan.decode:
            rows = _ARANGE_CACHE.get(plan.rows, keys.device)
            keys[rows, :, plan.positions] = key_states[:, :, 0]
            values[rows, :, plan.positions] = value_states[:, :, 0]
            return keys[:plan.rows, :, :plan.span], values[:plan.rows, :, :plan.span]
        row, start, end = plan.row, plan.start, plan.start + key_states.shape[2]
        keys[row, :, start:end] = key_states[0]
        values[row, :, start:end] = value_states[0]
        return keys[row:row + 1, :, :end], values[row:row + 1, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return (self.plan.span if self.plan.decode else self.plan.start + query_length), 0

    def get_seq_length(self) -> int:
        return self.plan.start if not self.plan.decode else self.plan.span - 1

    def get_max_length(self) -> int:
        return int(self.keys.shape[2])


class _Aranges:
    """``torch.arange(n)`` per size, made once (a decode step indexes rows with it in every layer)."""

    def __init__(self) -> None:
        self._made: dict[tuple[int, str], torch.Tensor] = {}

    def get(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, str(device))
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = torch.arange(n, device=device)
        return found


_ARANGE_CACHE = _Aranges()


@dataclass
class SlotCache:
    """Rows of keys and values for every layer, grown and shrunk by reallocating (rarely: see the engine)."""

    shape: Shape
    rows: int = 0
    positions: int = 0
    plan: Plan = field(default_factory=Plan)
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    cache: Any = None

    def nbytes(self, rows: int | None = None, positions: int | None = None) -> int:
        """Bytes of the buffers at ``rows`` x ``positions`` (default: as allocated now)."""
        rows = self.rows if rows is None else rows
        positions = self.positions if positions is None else positions
        return rows * positions * self.shape.bytes_per_token()

    def resize(self, rows: int, positions: int, keep_rows: int, keep_positions: int) -> None:
        """Reallocate to ``rows`` x ``positions``, keeping the first ``keep_rows`` rows' first positions."""
        s = self.shape
        new_k = [torch.zeros(rows, s.heads, positions, s.head_dim, dtype=s.dtype, device=s.device)
                 for _ in range(s.layers)] if rows and positions else []
        new_v = [torch.zeros_like(k) for k in new_k]
        n, p = min(keep_rows, rows), min(keep_positions, positions)
        if n and p and self.keys:
            for old, new in zip([*self.keys, *self.values], [*new_k, *new_v]):
                new[:n, :, :p] = old[:n, :, :p]
        self.keys, self.values, self.rows, self.positions = new_k, new_v, rows, positions
        self.cache = _cache([_SlotLayer(self.plan, k, v) for k, v in zip(new_k, new_v)]) if new_k else None

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy row ``src``'s first ``length`` positions into row ``dst`` (a leaving sequence's row)."""
        for buf in (*self.keys, *self.values):
            buf[dst, :, :length] = buf[src, :, :length]


class _Slots(Cache):  # type: ignore[misc]
    """The transformers ``Cache`` the model is called with."""


def _cache(layers: list[Any]) -> Any:
    return _Slots(layers=layers)


# Attention implementations that take the 4-D masks the engine builds: sdpa a boolean one (True: attend),
# eager an additive one.
MASKED_ATTENTION = ("sdpa", "eager")


def attention_mask(valid: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """``valid`` (True: attend) in the form the model's attention implementation reads."""
    if implementation == "sdpa":
        return valid
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill_(~valid, torch.finfo(dtype).min)


class _Probe(CacheLayerMixin):  # type: ignore[misc]
    """Records the shape of what a layer would cache, passes it through."""

    is_compileable = False
    is_sliding = False

    def __init__(self) -> None:
        super().__init__()
        self.seen: tuple[int, ...] | None = None
        self.dtype: torch.dtype | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen, self.dtype = tuple(key_states.shape), key_states.dtype
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1


def probe_shape(model: Any, layers: int, implementation: str) -> Shape | None:
    """Run one token through ``model`` with a recording cache; None if some layer did not use it (a model
    whose attention keeps other state: sliding windows, linear attention, cross attention)."""
    probes = [_Probe() for _ in range(layers)]
    device = next(model.parameters()).device
    with torch.inference_mode():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), cache=_cache(probes), use_cache=True,
              position_ids=torch.zeros(1, 1, dtype=torch.long, device=device),
              attention_mask=attention_mask(torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device), implementation,
                                            next(model.parameters()).dtype))
    seen = {p.seen for p in probes}
    if None in seen or len(seen) != 1:
        return None
    _, heads, _, head_dim = probes[0].seen  # type: ignore[misc]
    return Shape(layers, int(heads), int(head_dim), probes[0].dtype or torch.float32, device)
