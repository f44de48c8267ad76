"""The OpenAI-compatible API under ``/v1``, next to the native one: the official ``openai`` SDK works against
gpuq unchanged, and every call is an ordinary gpuq job (idempotent, durable, cancellable, in ``/v1/jobs``,
routed by model affinity, counted against quotas).

One module per route family maps OpenAI requests to job params and results back to OpenAI objects; errors on
these routes take OpenAI's shape (errors.py).
"""
from __future__ import annotations

from fastapi import APIRouter
from gpuq.api.openai import embeddings, images, models
from gpuq.api.openai.batches import routes as batches
from gpuq.api.openai.fine_tuning import routes as fine_tuning
from gpuq.api.openai.generation import routes as generation

# Each family's router is included in the app itself, busiest first: every level of nested routers costs each
# request that passes through it another round of matching. The calls (chat, completions, embeddings) are
# matched before the native job routes, the rest after them (api/main.py).
call_routers: tuple[APIRouter, ...] = (generation.router, embeddings.router)
other_routers: tuple[APIRouter, ...] = tuple(family.router for family in (images, models, batches, fine_tuning))
