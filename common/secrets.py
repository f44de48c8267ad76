"""Sealing secrets (per-job Hub tokens) so they never sit in Redis, events or Celery messages in clear."""
from __future__ import annotations

import base64
import hashlib
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

from gpuq.common.errors import ConfigError
from gpuq.common.settings import get_settings

SEALED_PREFIX = "sealed:"


@lru_cache(maxsize=1)
def _fernet() -> Fernet:
    """Key from GPUQ_SECRET_KEY; in dev/test a key file under the data dir shared by local processes."""
    s = get_settings()
    if s.secret_key is not None:
        material = s.secret_key.get_secret_value().encode()
    elif s.env == "prod":
        raise ConfigError("GPUQ_SECRET_KEY must be set in prod", field="GPUQ_SECRET_KEY")
    else:
        path = s.data_dir.resolve() / "secret.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        material = path.read_text().strip().encode()
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material).digest()))


def seal(secret: str) -> str:
    """Encrypt a secret for storage in a job record."""
    return SEALED_PREFIX + _fernet().encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str:
    """Decrypt a sealed secret (only inside the worker that needs it)."""
    if not sealed.startswith(SEALED_PREFIX):
        raise ConfigError("value is not a sealed secret")
    try:
        return _fernet().decrypt(sealed[len(SEALED_PREFIX):].encode()).decode()
    except InvalidToken as exc:
        raise ConfigError("sealed secret cannot be opened with this GPUQ_SECRET_KEY") from exc
