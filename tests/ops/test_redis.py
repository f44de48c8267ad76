"""ops/redis.conf and ops/redis-entrypoint.sh, run with a real redis-server on loopback."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gpuq.common.embedded_redis import free_port, redis_server_binary
from tests.ops.manifests import OPS

ENTRYPOINT = OPS / "redis-entrypoint.sh"
# Long enough for the entrypoint, and full of characters Redis' config parser must not choke on.
PASSWORD = 'gpuq "ops" test\\pass 0123456789'


def client(port: int, password: str | None = None) -> redis.Redis:
    """A client that fails at once instead of retrying a refused login with backoff."""
    return redis.Redis(port=port, password=password, decode_responses=True, retry=Retry(NoBackoff(), 0))


def directives() -> dict[str, str]:
    """Directive -> value of ops/redis.conf (last occurrence wins, as in Redis)."""
    out = {}
    for line in (OPS / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key.lower()] = value.strip()
    return out


def start(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """Run the entrypoint the way the containers do, with a real redis-server on PATH."""
    bindir = str(Path(redis_server_binary()).parent)
    full_env = {"PATH": f"{bindir}:/usr/bin:/bin", "REDIS_CONF": str(OPS / "redis.conf"), **env}
    return subprocess.Popen(["sh", str(ENTRYPOINT), *extra], cwd=tmp_path, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The committed config + entrypoint, on a free loopback port."""
    port = free_port()
    proc = start(tmp_path, {"REDIS_PASSWORD": PASSWORD}, "--port", str(port), "--bind", "127.0.0.1")
    probe = client(port, PASSWORD)
    deadline = time.monotonic() + 15
    while True:
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "redis-server did not come up"
            time.sleep(0.05)
    yield port, proc.pid
    proc.terminate()
    proc.wait(timeout=15)


def test_redis_conf_has_the_durability_and_eviction_directives() -> None:
    d = directives()
    assert d["appendonly"] == "yes"
    assert d["appendfsync"] == "everysec"
    assert d["maxmemory-policy"] == "noeviction"
    assert "requirepass" not in d, "the password is injected at start, never committed"


def test_entrypoint_starts_redis_that_refuses_clients_without_the_password(server: tuple[int, int]) -> None:
    port, pid = server
    with pytest.raises(redis.AuthenticationError):
        client(port).ping()
    with pytest.raises(redis.AuthenticationError):
        client(port, "wrong-password-0123456789").ping()
    authed = client(port, PASSWORD)
    config = {k: v for k in ("appendonly", "appendfsync", "maxmemory-policy")
              for k, v in authed.config_get(k).items()}
    assert config == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}
    authed.set("gpuq:ops", "1")
    assert authed.get("gpuq:ops") == "1"
    # The entrypoint execs redis-server: the password must not be on its command line.
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "redis-server" in cmdline and PASSWORD not in cmdline


def test_entrypoint_reads_the_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # Kubernetes secret files may end with a newline
    port = free_port()
    proc = start(tmp_path, {"REDIS_PASSWORD_FILE": str(secret)}, "--port", str(port), "--bind", "127.0.0.1")
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client(port, PASSWORD).ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize("env", [{}, {"REDIS_PASSWORD": "changeme"}, {"REDIS_PASSWORD": "short-pass"}],
                         ids=["missing", "placeholder", "short"])
def test_entrypoint_refuses_to_run_redis_without_a_real_password(env: dict[str, str], tmp_path: Path) -> None:
    proc = start(tmp_path, env, "--port", str(free_port()), "--bind", "127.0.0.1")
    output, _ = proc.communicate(timeout=15)
    assert proc.returncode != 0, output
    assert "Ready to accept connections" not in output
