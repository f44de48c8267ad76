"""Webhook URL vetting (after DNS resolution) and signatures, as pure functions."""
from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from gpuq.common.errors import InvalidInput
from gpuq.common.webhooks.signing import sign, verify_signature
from gpuq.common.webhooks.ssrf import check_webhook_url


def _resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        family = socket.AF_INET6 if ":" in addresses[0] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
    return resolve


def test_public_address_is_accepted_and_pinned_for_delivery() -> None:
    target = check_webhook_url("https://hooks.example.com/gpuq", [], _resolver("93.184.216.34"))
    assert (target.scheme, target.host, target.port, target.addresses) == \
        ("https", "hooks.example.com", 443, ("93.184.216.34",))


def test_a_name_with_any_internal_address_is_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        check_webhook_url("http://sneaky.example.com/", [], _resolver("93.184.216.34", "10.0.0.7"))
    assert err.value.field == "webhook.url" and "10.0.0.7, a private address" in err.value.message


def test_metadata_name_resolving_to_link_local_is_refused() -> None:
    with pytest.raises(InvalidInput, match="link-local"):
        check_webhook_url("http://metadata.google.internal/", [], _resolver("169.254.169.254"))


@pytest.mark.parametrize(("address", "why"), [
    ("fec0::1", "site-local"), ("feff:ffff::1", "site-local"), ("3fff:fff::1", "documentation"),
    ("2002:5db8:d822::1", "6to4"), ("192.88.99.1", "6to4 relay"), ("64:ff9b::5db8:d822", "reserved"),
    ("::5db8:d822", "reserved"), ("5f00::1", "reserved"), ("::ffff:100.64.0.1", "non-routable"),
])
def test_ranges_python_calls_global_but_are_not_public_are_refused(address: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        check_webhook_url("http://hooks.example.com/", [], _resolver(address))


def test_allowlist_takes_addresses_networks_and_host_names() -> None:
    assert check_webhook_url("http://127.0.0.1:8080/x", ["127.0.0.1"]).addresses == ("127.0.0.1",)
    assert check_webhook_url("http://10.1.2.3/x", ["10.0.0.0/8"]).addresses == ("10.1.2.3",)
    internal = check_webhook_url("http://hooks.internal/x", ["hooks.internal"], _resolver("10.9.9.9"))
    assert internal.addresses == ("10.9.9.9",)
    with pytest.raises(InvalidInput):
        check_webhook_url("http://127.0.0.2/x", ["127.0.0.1"])


def test_signature_binds_body_timestamp_and_secret() -> None:
    body = b'{"type":"completed"}'
    header = sign("s3cret-s3cret-s3cret", body)
    assert verify_signature("s3cret-s3cret-s3cret", body, header)
    assert not verify_signature("s3cret-s3cret-s3cret", body + b" ", header)
    assert not verify_signature("other-secret-000000", body, header)
    ts = int(header.split(",")[0][2:])
    forged = header.replace(f"t={ts}", f"t={ts + 1}")
    assert not verify_signature("s3cret-s3cret-s3cret", body, forged)


def test_old_signatures_are_refused_to_stop_replays() -> None:
    body = b"{}"
    old = sign("s3cret-s3cret-s3cret", body, timestamp=int(time.time()) - 3600)
    assert not verify_signature("s3cret-s3cret-s3cret", body, old)
    assert verify_signature("s3cret-s3cret-s3cret", body, old, tolerance_s=7200)
    assert not verify_signature("s3cret-s3cret-s3cret", body, "garbage")
