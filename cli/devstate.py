"""What a dev stack keeps under ``var/`` across restarts: its API key and its webhook secret (mode 0600), so a
second shell's ``export`` never goes stale and webhook signatures can be checked with a secret that stays put."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

TENANT = "dev"


def _persisted(path: Path, make: str) -> str:
    """The secret stored at ``path``, created (owner read/write only) with ``make`` the first time."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(make + "\n")
    os.chmod(path, 0o600)
    return make


def api_key_path(data_dir: Path) -> Path:
    """Where the dev API key lives."""
    return data_dir / "dev-api-key"


def webhook_secret_path(data_dir: Path) -> Path:
    """Where the dev tenant's webhook signing secret lives."""
    return data_dir / "dev-webhook-secret"


def api_key(data_dir: Path) -> str:
    """The dev tenant's API key (made once)."""
    return _persisted(api_key_path(data_dir), f"dev-{secrets.token_urlsafe(18)}")


def webhook_secret(data_dir: Path) -> str:
    """The dev tenant's webhook secret (made once)."""
    return _persisted(webhook_secret_path(data_dir), f"whsec-{secrets.token_urlsafe(24)}")
