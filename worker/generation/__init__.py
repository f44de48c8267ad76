"""Continuous batching for decoder-only text generation (text-generation, chat).

One engine per resident causal LM (``resident.engine_for``) steps every running sequence at once over a KV
cache it manages (``cache``), admitting new sequences at the next step and dropping finished ones the step
they end (``engine``, ``steps``); per-sequence sampling with its own generator (``sampling``), stop strings
and streamed text (``text``, ``outputs``); the job side (``serve``) turns a job into sequences, reports
progress in tokens and builds the result; ``metrics`` feeds the worker's Prometheus telemetry. Encoder-decoder
tasks, beam search and models the engine cannot run keep the static path (worker/batching.py).
"""
