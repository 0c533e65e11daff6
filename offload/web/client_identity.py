"""Who a request comes from: one key per client, for the rate limits, the quotas and the login limit.

The address is the TCP peer's unless a proxy that the settings trust says otherwise:

- behind a proxy that names the client in a header of its own (Fly's ``Fly-Client-IP``, which
  Fly's proxy sets on every request it forwards), that header, when ``CLIENT_IP_HEADER`` names
  it, or on Fly (``FLY_APP_NAME`` set) by default. ``X-Forwarded-For`` is then ignored for the
  address: a client can append to it, it cannot replace the proxy's own header;
- otherwise ``X-Forwarded-For`` / ``-Proto`` (werkzeug's ProxyFix, ``TRUSTED_PROXY_COUNT`` hops)
  only when the peer is one of ``TRUSTED_PROXIES``: a client reaching the web directly gains
  nothing by sending its own.

One IPv6 client usually holds a whole /64 (SLAAC, privacy addresses), so an IPv6 address is
keyed by its /64; an IPv4-mapped IPv6 address counts as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

IPV6_PREFIX = 64
"""Bits of an IPv6 address that name one client."""

FLY_CLIENT_IP_HEADER = "Fly-Client-IP"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip_header(config: Mapping[str, Any]) -> str:
    """Return the header a trusted proxy names the client in (``CLIENT_IP_HEADER``, or Fly's on Fly), or ""."""
    header = config["OFFLOAD_CLIENT_IP_HEADER"].strip()
    if not header and config["OFFLOAD_FLY_APP_NAME"]:
        return FLY_CLIENT_IP_HEADER
    return header


def parse_address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return ``text`` as an IP address (an IPv4-mapped IPv6 address as IPv4), or None if it is not one."""
    try:
        address = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """Return the networks ``entries`` name (``10.0.0.0/8``, ``127.0.0.1``); raise ValueError naming a bad one."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an address or network") from None
    return networks


class TrustedProxies:
    """WSGI middleware: take the client's address from what a trusted proxy says, and only from it."""

    def __init__(self, app: Any, *, header: str, networks: list[Network], hops: int) -> None:
        self.app = app
        self.header_key = "HTTP_" + header.upper().replace("-", "_") if header else ""
        self.networks = networks
        # The proxy's own header names the client; X-Forwarded-Proto still says whether it was HTTPS.
        self.behind_header = ProxyFix(app, x_for=0, x_proto=max(hops, 1))
        self.behind_forwarding = ProxyFix(app, x_for=hops, x_proto=hops)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.header_key:
            named = parse_address(environ.get(self.header_key))
            if named is not None:
                environ["offload.peer_addr"] = environ.get("REMOTE_ADDR")
                environ["REMOTE_ADDR"] = str(named)
            return self.behind_header(environ, start_response)
        peer = parse_address(environ.get("REMOTE_ADDR"))
        if peer is not None and any(peer in network for network in self.networks):
            return self.behind_forwarding(environ, start_response)
        return self.app(environ, start_response)


def install(app: Flask) -> None:
    """Wrap ``app`` so ``request.remote_addr`` is the client's address as the trusted proxy reports it."""
    config = app.config
    header = client_ip_header(config)
    networks = parse_networks(config["OFFLOAD_TRUSTED_PROXIES"])
    hops = config["OFFLOAD_TRUSTED_PROXY_COUNT"]
    if header or (networks and hops):
        app.wsgi_app = TrustedProxies(app.wsgi_app, header=header, networks=networks, hops=hops)  # type: ignore[method-assign]  # Flask documents wrapping it


def client_key() -> str:
    """Return the key this request's client is counted under: its IPv4 address, or its IPv6 /64."""
    address = parse_address(request.remote_addr)
    if address is None:
        return request.remote_addr or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)
