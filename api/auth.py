"""Bearer-key authentication: every key maps to one tenant."""
from __future__ import annotations

import hmac

from fastapi import Request

from gpuq.common.errors import Forbidden, Unauthorized
from gpuq.common.settings import get_settings


def tenant_for(request: Request) -> str:
    """Resolve the caller's tenant from ``Authorization: Bearer <key>``; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing bearer token (Authorization: Bearer <key>)", field="Authorization")
    key = key.strip()
    for known, tenant in get_settings().api_keys.items():
        if hmac.compare_digest(known.encode(), key.encode()):
            return tenant
    raise Unauthorized("invalid API key", field="Authorization")


def require_admin(request: Request) -> None:
    """Admin routes take a bearer key from ``GPUQ_ADMIN_KEYS``: 401 without a valid key, 403 for a tenant key."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("missing bearer token (Authorization: Bearer <admin key>)", field="Authorization")
    settings = get_settings()
    if any(hmac.compare_digest(k.encode(), key.encode()) for k in settings.admin_keys):
        return
    if any(hmac.compare_digest(k.encode(), key.encode()) for k in settings.api_keys):
        raise Forbidden("this route needs an admin key (GPUQ_ADMIN_KEYS)", field="Authorization")
    raise Unauthorized("invalid admin key", field="Authorization")
