"""Bearer-key authentication: every key maps to one tenant."""
from __future__ import annotations

import hmac

from fastapi import Request

from common.errors import Unauthorized
from common.settings import get_settings


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
