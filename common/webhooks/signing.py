"""HMAC-SHA256 signatures over ``timestamp.body``: what the sender writes and receivers verify.

Header: ``X-Gpuq-Signature: t=<unix seconds>,v1=<hex digest>``. The timestamp is signed with the body,
so a captured delivery cannot be replayed outside the receiver's tolerance window. Stdlib only: the
Python client re-exports ``verify_signature`` for receivers.
"""
from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Gpuq-Signature"
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for ``body`` at ``timestamp`` (now by default)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},v1={_digest(secret, ts, body)}"


def verify_signature(secret: str, body: bytes, header: str, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> bool:
    """True when ``header`` is a valid signature of ``body`` made within ``tolerance_s`` of ``now``.

    Pass the raw request body exactly as received (before any JSON parsing).
    """
    fields = _parse(header)
    try:
        ts = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = _digest(secret, ts, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


def _digest(secret: str, ts: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def _parse(header: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(key, []).append(value)
    return out
