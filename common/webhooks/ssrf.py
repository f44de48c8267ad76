"""Server-side request forgery guard for webhook URLs.

A webhook makes gpuq send HTTP requests on a tenant's behalf, from inside the deployment's network. A URL
is accepted only when every address its host resolves to is publicly routable; loopback, private,
link-local (cloud metadata lives there), multicast, reserved and other non-global addresses are refused
unless the operator allowlists them (``GPUQ_WEBHOOK_ALLOWLIST``: IPs, CIDRs or host names). The sender
checks again at delivery time and connects to the address it checked, so a DNS answer that changes
after submit (rebinding) cannot redirect a delivery inward.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gpuq.common.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[..., list[tuple[Any, ...]]]
FIELD = "webhook.url"


@dataclass(frozen=True)
class Target:
    """A checked webhook destination: where to connect, and what to call the host (Host header, SNI)."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def check_webhook_url(url: str, allowlist: Sequence[str], resolve: Resolver = socket.getaddrinfo) -> Target:
    """Parse, resolve and vet ``url``; InvalidInput naming ``webhook.url`` when it may not be called."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _refuse("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise _refuse("must not carry credentials; the signature authenticates deliveries")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _refuse("has an invalid port") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise _refuse("has no host")
    addresses = _resolve(host, port, resolve)
    allowed_nets, allowed_hosts = _allowlist(allowlist)
    for address in addresses:
        if host in allowed_hosts or any(address in net for net in allowed_nets):
            continue
        why = non_public_reason(address)
        if why:
            raise _refuse(f"resolves to {address}, a {why} address; webhooks may only target public "
                          "addresses (the operator can allowlist others with GPUQ_WEBHOOK_ALLOWLIST)")
    return Target(parts.scheme, host, port, tuple(str(a) for a in addresses))


# Ranges the ipaddress module calls global although they are not publicly routable (checked on Python 3.11+):
# IPv6 site-local (deprecated, still routed inside some networks), the IPv6 documentation prefix of RFC 9637,
# 6to4 (deprecated; the relay delivers to the IPv4 address inside it), and the deprecated 6to4 relay anycast.
_MISCLASSIFIED: tuple[tuple[Network, str], ...] = (
    (ipaddress.ip_network("fec0::/10"), "site-local"),
    (ipaddress.ip_network("3fff::/20"), "documentation"),
    (ipaddress.ip_network("2002::/16"), "6to4 (an IPv4 address inside IPv6)"),
    (ipaddress.ip_network("192.88.99.0/24"), "6to4 relay anycast"),
)


def non_public_reason(address: IPAddress) -> str | None:
    """Why an address may not receive webhooks (None when it is publicly routable)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for net, name in _MISCLASSIFIED:
        if address.version == net.version and address in net:
            return name
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local (cloud metadata)", address.is_link_local), ("multicast", address.is_multicast),
              ("private", address.is_private), ("reserved", address.is_reserved),
              ("non-routable", not address.is_global))
    return next((name for name, hit in checks if hit), None)


def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _refuse(f"host {host!r} cannot be resolved ({exc})") from None
    found = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    if not found:
        raise _refuse(f"host {host!r} resolves to no address")
    return sorted(found, key=lambda a: (a.version, int(a)))


def _allowlist(entries: Sequence[str]) -> tuple[list[Network], set[str]]:
    nets: list[Network] = []
    hosts: set[str] = set()
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(entry.lower())
    return nets, hosts


def _refuse(why: str) -> InvalidInput:
    return InvalidInput(f"{FIELD}: {why}", field=FIELD)
